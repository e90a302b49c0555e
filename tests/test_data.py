"""Data: the sharded batch plan, the synthetic task, text corpora and torchvision's MNIST reader."""
import pathlib
import struct

import pytest
import torch

from train.data import DataConfig, ShardedBatches, build_datasets
from train.errors import ConfigError


# --- the batch plan ---------------------------------------------------------------------------

def test_ranks_and_micro_steps_partition_the_single_process_batch():
    whole = ShardedBatches(100, 12, 0, 1, 1, seed=3)
    for step in (0, 5, 8, 9):  # 8 steps per epoch: 9 is in the second epoch
        parts = {(r, m): ShardedBatches(100, 12, r, 2, 3, seed=3).indices(step, m) for r in range(2) for m in range(3)}
        assert all(p.shape == (2,) and p.dtype == torch.long for p in parts.values())
        joined = torch.cat(list(parts.values())).tolist()
        assert len(set(joined)) == 12  # disjoint across ranks and micro-steps
        assert set(joined) == set(whole.indices(step).tolist())
        rank0 = {i for m in range(3) for i in parts[0, m].tolist()}
        rank1 = {i for m in range(3) for i in parts[1, m].tolist()}
        assert not rank0 & rank1


def test_each_epoch_is_a_new_order_that_uses_every_item_once():
    plan = ShardedBatches(40, 10, 0, 1, 1, seed=1)
    epoch0 = torch.cat([plan.indices(s) for s in range(4)])
    epoch1 = torch.cat([plan.indices(s) for s in range(4, 8)])
    assert sorted(epoch0.tolist()) == list(range(40)) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1)


def test_the_plan_is_a_pure_function_of_seed_and_step():
    plan = ShardedBatches(40, 10, 1, 2, 1, seed=1)
    seen = [plan.indices(s) for s in range(12)]  # walks three epochs
    fresh = ShardedBatches(40, 10, 1, 2, 1, seed=1)  # a resumed run jumps straight to step 6
    assert torch.equal(fresh.indices(6), seen[6]) and torch.equal(fresh.indices(2), seen[2])
    assert not torch.equal(ShardedBatches(40, 10, 1, 2, 1, seed=2).indices(6), seen[6])


def test_drop_last_keeps_the_ragged_tail_out():
    plan = ShardedBatches(25, 10, 0, 1, 1, seed=0)  # 2 steps per epoch; 5 items left out each epoch
    assert plan.steps_per_epoch == 2
    epoch = torch.cat([plan.indices(0), plan.indices(1)]).tolist()
    assert len(set(epoch)) == 20 and all(0 <= i < 25 for i in epoch)


def test_eval_batches_are_fixed_disjoint_across_ranks_and_wrap():
    r0 = ShardedBatches(100, 8, 0, 2, 1, seed=0, num_eval_items=10)
    r1 = ShardedBatches(100, 8, 1, 2, 1, seed=5)
    assert r0.eval_indices(0).tolist() == [0, 1, 2, 3] and r1.eval_indices(0, 10).tolist() == [4, 5, 6, 7]
    assert r0.eval_indices(1).tolist() == [8, 9, 0, 1]  # wraps around a small eval set
    with pytest.raises(ValueError, match="num_eval_items"):
        r1.eval_indices(0)


def test_bad_batch_sizes_name_the_key():
    with pytest.raises(ConfigError, match=r"train.batch_size=10 must divide by world size x train.grad_accum = 4 x 1"):
        ShardedBatches(100, 10, 0, 4, 1, 0)
    with pytest.raises(ConfigError, match=r"train.batch_size=12 .* = 2 x 4"):
        ShardedBatches(100, 12, 0, 2, 4, 0)
    with pytest.raises(ConfigError, match=r"train.batch_size=16 is larger than the dataset \(8 items\)"):
        ShardedBatches(8, 16, 0, 1, 1, 0)


# --- synthetic images -------------------------------------------------------------------------

def test_synthetic_task_has_the_promised_shape_and_depends_on_the_seed():
    a = build_datasets(DataConfig(num_samples=2048), "image", seed=7)
    b = build_datasets(DataConfig(num_samples=2048), "image", seed=7)
    c = build_datasets(DataConfig(num_samples=2048), "image", seed=8)
    assert a.spec == {"input_shape": (1, 28, 28), "num_classes": 10}
    assert len(a.train) + len(a.eval) == 2048 and len(a.eval) == int(2048 * 0.05)
    x, y = a.train.get(torch.tensor([0, 5, 9]))
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (3,) and y.dtype == torch.long
    everything = a.train.get(torch.arange(len(a.train)))
    assert torch.equal(everything[0], b.train.get(torch.arange(len(b.train)))[0])
    assert not torch.equal(everything[0], c.train.get(torch.arange(len(c.train)))[0])
    assert set(everything[1].tolist()) == set(range(10))


def test_synthetic_samples_are_shifted_copies_of_their_class_prototype(monkeypatch):
    monkeypatch.setattr("train.imagedata.NOISE", 0.0)  # without noise, only the shifts tell samples apart
    data = build_datasets(DataConfig(num_samples=1024), "image", seed=3)
    x, y = data.train.get(torch.arange(len(data.train)))
    for k in range(10):
        distinct = torch.unique(x[y == k], dim=0)
        assert 5 < len(distinct) <= 25  # a per-sample shift of -2..2 pixels each way: 25 windows


def test_synthetic_task_is_learnable():
    data = build_datasets(DataConfig(num_samples=1024), "image", seed=7)
    x, y = data.train.get(torch.arange(len(data.train)))
    torch.manual_seed(0)
    model = torch.nn.Linear(784, 10)  # logistic regression
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x.flatten(1)), y).backward()
        opt.step()
    ex, ey = data.eval.get(torch.arange(len(data.eval)))
    accuracy = (model(ex.flatten(1)).argmax(1) == ey).float().mean().item()
    assert accuracy > 0.8  # chance is 0.1; the eval items were never trained on


# --- text -------------------------------------------------------------------------------------

def test_text_from_a_folder_gives_the_exact_bytes(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_bytes(bytes(range(1, 201)) * 3)  # no NUL: NUL means binary
    (tmp_path / "sub" / "b.txt").write_bytes(b"hello world " * 50)
    (tmp_path / "blob.bin").write_bytes(b"\0\1\2" * 100)  # binary: skipped
    (tmp_path / ".hidden").write_bytes(b"not corpus " * 10)  # hidden: skipped
    data = build_datasets(DataConfig(name="text", root=str(tmp_path), seq_len=16, eval_fraction=0.1), "text", 0)
    corpus = (tmp_path / "a.txt").read_bytes() + (tmp_path / "sub" / "b.txt").read_bytes()  # sorted paths
    n_chunks = len(corpus) // 17
    assert len(data.train) + len(data.eval) == n_chunks and len(data.eval) == int(n_chunks * 0.1)
    x, y = data.train.get(torch.tensor([0, 3]))
    assert x.shape == y.shape == (2, 16) and x.dtype == y.dtype == torch.long
    assert x[1].tolist() == list(corpus[51:67]) and y[1].tolist() == list(corpus[52:68])
    assert torch.equal(x[:, 1:], y[:, :-1])
    ex, ey = data.eval.get(torch.tensor([len(data.eval) - 1]))  # the last whole chunk of the corpus
    last = (n_chunks - 1) * 17
    assert ex[0].tolist() == list(corpus[last:last + 16]) and ey[0].tolist() == list(corpus[last + 1:last + 17])
    assert data.spec == {"vocab_size": 256, "seq_len": 16}


def test_text_from_one_file_respects_max_bytes(tmp_path):
    path = tmp_path / "one.txt"
    path.write_bytes(b"abcdefghij" * 1000)
    data = build_datasets(DataConfig(name="text", root=str(path), seq_len=9, max_bytes=2000), "text", 0)
    assert len(data.train) + len(data.eval) == 200  # 2000 bytes in chunks of 10
    x, y = data.train.get(torch.tensor([7]))
    assert bytes(x[0].tolist()) == b"abcdefghi" and bytes(y[0].tolist()) == b"bcdefghij"


def test_embedded_corpus_needs_no_download():
    data = build_datasets(DataConfig(name="text", max_bytes=300_000), "text", 0)
    assert (len(data.train) + len(data.eval)) * 65 > 290_000  # well over 100 KB, capped at max_bytes
    x, _ = data.train.get(torch.tensor([0]))
    assert bytes(x[0].tolist()).isascii()


def test_text_errors_name_the_key_and_the_path(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="data.root='/nonexistent/corpus' does not exist"):
        build_datasets(DataConfig(name="text", root="/nonexistent/corpus"), "text", 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no readable text"):
        build_datasets(DataConfig(name="text", root=str(tmp_path / "empty")), "text", 0)
    (tmp_path / "tiny.txt").write_bytes(b"x" * 100)
    with pytest.raises(ConfigError, match="holds 100 bytes: too few for data.seq_len=64"):
        build_datasets(DataConfig(name="text", root=str(tmp_path / "tiny.txt")), "text", 0)
    real_open = pathlib.Path.open

    def refuse(self, *args, **kwargs):  # chmod cannot make a file unreadable to root, so refuse here
        if self.name == "tiny.txt":
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", refuse)
    with pytest.raises(ConfigError, match=r"cannot read '.*tiny.txt' \(Permission denied\)"):
        build_datasets(DataConfig(name="text", root=str(tmp_path)), "text", 0)


# --- torchvision datasets and config checks ---------------------------------------------------

def write_idx(path, magic, dims, payload):
    path.write_bytes(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload)


def test_mnist_through_torchvision_from_a_local_root(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    pixels = {}
    for prefix, n in (("train", 32), ("t10k", 16)):
        pixels[prefix] = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        labels = (torch.arange(n, dtype=torch.uint8) * 3) % 10
        write_idx(raw / f"{prefix}-images-idx3-ubyte", 2051, (n, 28, 28), pixels[prefix].numpy().tobytes())
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", 2049, (n,), labels.numpy().tobytes())
    data = build_datasets(DataConfig(name="mnist", root=str(tmp_path)), "image", 0)
    assert len(data.train) == 32 and len(data.eval) == 16
    assert data.spec == {"input_shape": (1, 28, 28), "num_classes": 10}
    x, y = data.train.get(torch.arange(32))
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long
    assert y.tolist() == [i * 3 % 10 for i in range(32)]
    assert torch.allclose(x[:, 0], (pixels["train"].float() / 255 - 0.1307) / 0.3081, atol=1e-5)
    ex, _ = data.eval.get(torch.arange(16))  # eval is the test split, normalised like train
    assert torch.allclose(ex[:, 0], (pixels["t10k"].float() / 255 - 0.1307) / 0.3081, atol=1e-5)


def test_missing_torchvision_data_says_how_to_get_it(tmp_path):
    empty = str(tmp_path / "empty")
    with pytest.raises(ConfigError, match=rf"^data.root='{empty}' has no MNIST \(set data.download=true .*MNIST/raw\)$"):
        build_datasets(DataConfig(name="mnist", root=empty), "image", 0)
    with pytest.raises(ConfigError, match="has no CIFAR-10 .*cifar-10-batches-py"):
        build_datasets(DataConfig(name="cifar10", root=empty), "image", 0)


def test_data_must_fit_the_model_task_and_config_is_checked():
    with pytest.raises(ConfigError, match=r"data.name='synthetic' does not fit the model's task 'text' \(choose from text\)"):
        build_datasets(DataConfig(name="synthetic"), "text", 0)
    with pytest.raises(ConfigError, match=r"data.name='text' .* 'image' \(choose from synthetic, mnist, cifar10\)"):
        build_datasets(DataConfig(name="text"), "image", 0)
    with pytest.raises(ConfigError, match="data.name='mnits' is not allowed .*did you mean 'mnist'"):
        DataConfig(name="mnits")
    with pytest.raises(ConfigError, match=r"data.eval_fraction=0.0 is out of range"):
        DataConfig(eval_fraction=0.0)
    with pytest.raises(ConfigError, match=r"data.seq_len=0 is out of range"):
        DataConfig(seq_len=0)
