"""Data: the sharded batch plan, the synthetic task, text corpora and torchvision's MNIST reader."""
import struct

import pytest
import torch

from train.data import DataConfig, ShardedBatches, build_datasets
from train.errors import ConfigError


def test_ranks_and_micro_steps_partition_the_single_process_batch():
    whole = ShardedBatches(100, 12, 0, 1, 1, seed=3)
    for step in (0, 5, 8, 9):  # 8 steps per epoch: 9 is in the second epoch
        parts = [ShardedBatches(100, 12, r, 2, 3, seed=3).indices(step, m) for r in range(2) for m in range(3)]
        assert all(len(p) == 2 for p in parts)
        joined = torch.cat(parts)
        assert len(set(joined.tolist())) == 12
        assert set(joined.tolist()) == set(whole.indices(step).tolist())


def test_each_epoch_is_a_new_order_that_uses_every_item_once():
    plan = ShardedBatches(40, 10, 0, 1, 1, seed=1)
    epoch0 = torch.cat([plan.indices(s) for s in range(4)])
    epoch1 = torch.cat([plan.indices(s) for s in range(4, 8)])
    assert sorted(epoch0.tolist()) == list(range(40)) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(plan.indices(6), ShardedBatches(40, 10, 0, 1, 1, seed=1).indices(6))  # pure function


def test_bad_batch_sizes_name_the_key():
    with pytest.raises(ConfigError, match="train.batch_size=10 must divide by world size x train.grad_accum = 4 x 1"):
        ShardedBatches(100, 10, 0, 4, 1, 0)
    with pytest.raises(ConfigError, match="larger than the dataset"):
        ShardedBatches(8, 16, 0, 1, 1, 0)


def fit_linear(data, steps=40):
    """Full-batch Adam on a linear classifier: (eval accuracy, train loss, eval loss)."""
    x, y = data.train.get(torch.arange(len(data.train)))
    ex, ey = data.eval.get(torch.arange(len(data.eval)))
    torch.manual_seed(0)
    model = torch.nn.Linear(784, 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x.flatten(1)), y).backward()
        opt.step()
    with torch.no_grad():
        accuracy = (model(ex.flatten(1)).argmax(1) == ey).float().mean().item()
        losses = [torch.nn.functional.cross_entropy(model(a.flatten(1)), b).item() for a, b in ((x, y), (ex, ey))]
    return accuracy, *losses


def test_synthetic_task_is_deterministic_balanced_and_noisy():
    a = build_datasets(DataConfig(num_samples=2048), "image", seed=7)
    b = build_datasets(DataConfig(num_samples=2048), "image", seed=7)
    c = build_datasets(DataConfig(num_samples=2048), "image", seed=8)
    clean = build_datasets(DataConfig(num_samples=2048, label_noise=0.0), "image", seed=7)
    assert torch.equal(a.train.inputs, b.train.inputs) and torch.equal(a.train.targets, b.train.targets)
    assert not torch.equal(a.train.inputs, c.train.inputs)
    assert a.spec == {"input_shape": (1, 28, 28), "num_classes": 10}
    shares = torch.bincount(a.train.targets, minlength=10) / len(a.train)
    assert shares.min() > 0.05 and shares.max() < 0.15  # the teacher's classes are balanced
    # Same images, and 20% of labels redrawn uniformly: ~18% end up different from the teacher's.
    assert torch.equal(a.train.inputs, clean.train.inputs)
    changed = (a.train.targets != clean.train.targets).float().mean().item()
    assert 0.13 < changed < 0.23


def test_synthetic_task_is_learnable_but_not_a_lookup_table():
    noisy = fit_linear(build_datasets(DataConfig(num_samples=2048), "image", seed=7))
    clean = fit_linear(build_datasets(DataConfig(num_samples=2048, label_noise=0.0), "image", seed=7))
    assert noisy[0] > 0.3  # chance is 0.1: there is a function to learn
    assert clean[0] > noisy[0]  # the noisy labels cost accuracy no model can win back
    assert noisy[2] > 1.0 and noisy[2] > noisy[1] + 0.5  # eval loss has a floor; memorising shows as a gap


def test_text_from_a_folder_gives_the_exact_bytes(tmp_path):
    (tmp_path / "a.txt").write_bytes(bytes(range(1, 201)) * 3)  # no NUL: NUL means binary
    (tmp_path / "b.txt").write_bytes(b"hello world " * 50)
    data = build_datasets(DataConfig(name="text", root=str(tmp_path), seq_len=16, eval_fraction=0.1), "text", 0)
    corpus = (tmp_path / "a.txt").read_bytes() + (tmp_path / "b.txt").read_bytes()
    x, y = data.train.get(torch.tensor([0, 3]))
    assert x.shape == (2, 16) and x.dtype == torch.long
    assert x[1].tolist() == list(corpus[48:64]) and y[1].tolist() == list(corpus[49:65])
    assert data.spec == {"vocab_size": 256, "seq_len": 16}


def test_embedded_corpus_needs_no_download():
    data = build_datasets(DataConfig(name="text", max_bytes=300_000), "text", 0)
    assert len(data.train) * 64 > 250_000
    x, _ = data.train.get(torch.tensor([0]))
    assert bytes(x[0].tolist()).isascii()


def test_missing_and_mismatched_data_fail_with_the_key():
    with pytest.raises(ConfigError, match="data.root='/nonexistent/corpus' does not exist"):
        build_datasets(DataConfig(name="text", root="/nonexistent/corpus"), "text", 0)
    with pytest.raises(ConfigError, match=r"data.label_noise=1.5 is out of range \(must be >= 0 and <= 1\)"):
        DataConfig(label_noise=1.5)
    with pytest.raises(ConfigError, match="does not fit the model's task 'text'"):
        build_datasets(DataConfig(name="synthetic"), "text", 0)


def write_idx(path, magic, dims, payload):
    path.write_bytes(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload)


def test_mnist_through_torchvision_from_a_local_root(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 32), ("t10k", 16)):
        pixels = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        write_idx(raw / f"{prefix}-images-idx3-ubyte", 2051, (n, 28, 28), pixels.numpy().tobytes())
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", 2049, (n,), labels.numpy().tobytes())
    data = build_datasets(DataConfig(name="mnist", root=str(tmp_path)), "image", 0)
    assert len(data.train) == 32 and len(data.eval) == 16
    x, y = data.train.get(torch.arange(32))
    assert x.shape == (32, 1, 28, 28) and y.tolist() == [i % 10 for i in range(32)]
    assert abs(x.mean().item()) < 1e-4  # normalised
    with pytest.raises(ConfigError, match="data.download=true"):
        build_datasets(DataConfig(name="mnist", root=str(tmp_path / "empty")), "image", 0)
