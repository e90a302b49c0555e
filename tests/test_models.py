"""Model zoo: shapes, parameter counts by hand, FLOPs by hand, learning, causality, registry errors."""
import math

import pytest
import torch

from models import available_models, build_model, flavors_of

IMAGE = {"input_shape": (1, 28, 28), "num_classes": 10}
TEXT = {"vocab_size": 256, "seq_len": 32}


def batch(name, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    if name == "mlp":
        return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    x = torch.randint(0, 256, (n, 33), generator=g)
    return x[:, :-1], x[:, 1:]


@pytest.mark.parametrize("name", ["mlp", "lstm", "transformer"])
def test_loss_at_init_is_near_uniform(name):
    torch.manual_seed(0)
    model = build_model(name, "debug", IMAGE if name == "mlp" else TEXT)
    loss = model(*batch(name))
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert abs(loss.item() - math.log(10 if name == "mlp" else 256)) < 0.5


def test_mlp_param_count_and_flops_by_hand():
    model = build_model("mlp", "debug", IMAGE)
    weights = 784 * 64 + 64 * 10
    assert model.num_params() == weights + 64 + 10
    assert model.flops_per_item() == 6 * weights
    assert model.logits(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_transformer_param_count_and_flops_by_hand():
    model = build_model("transformer", "debug", TEXT)  # 2 layers, d 64, block 128, vocab 256, tied
    d, L, V, P = 64, 2, 256, 128
    per_block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    assert model.num_params() == V * d + P * d + L * per_block + 2 * d
    matmul = L * (3 * d * d + d * d + 8 * d * d) + V * d
    assert model.flops_per_item() == 6 * matmul + 12 * L * d * 32
    assert model.logits(torch.zeros(2, 32, dtype=torch.long)).shape == (2, 32, V)


def test_gpt2_small_is_about_124m_and_builds_on_meta():
    with torch.device("meta"):
        for flavor in flavors_of("transformer"):
            seq = 1024 if flavor.startswith("gpt2") else 128
            model = build_model("transformer", flavor, {"vocab_size": 256, "seq_len": seq})
            if flavor == "gpt2-small":
                assert 120e6 < model.num_params() < 130e6


@pytest.mark.parametrize("name", ["mlp", "lstm", "transformer"])
def test_a_few_steps_lower_the_loss(name):
    torch.manual_seed(0)
    model = build_model(name, "debug", IMAGE if name == "mlp" else TEXT)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = batch(name, n=16)
    first = model(x, y).item()
    for _ in range(30):
        opt.zero_grad()
        model(x, y).backward()
        opt.step()
    assert model(x, y).item() < 0.7 * first


@pytest.mark.parametrize("name", ["transformer", "lstm"])
def test_text_models_are_causal(name):
    torch.manual_seed(0)
    model = build_model(name, "debug", TEXT).eval()
    x, _ = batch(name, n=2)
    changed = x.clone()
    changed[:, 20] = (changed[:, 20] + 1) % 256
    a, b = model.logits(x), model.logits(changed)
    assert torch.allclose(a[:, :20], b[:, :20], atol=1e-6)
    assert not torch.allclose(a[:, 20:], b[:, 20:])


@pytest.mark.parametrize("args, fragment", [
    (("mpl", "debug", IMAGE), "did you mean 'mlp'"),
    (("transformer", "tiny", TEXT), "choose from debug, small, gpt2-small, gpt2-medium"),
    (("lstm", "debug", TEXT, {"hiden": 8}), "did you mean 'hidden'"),
    (("lstm", "debug", TEXT, {"hidden": -3}), "model.hidden=-3"),
    (("transformer", "debug", {"vocab_size": 256, "seq_len": 4096}), "model.block_size=128"),
])
def test_registry_errors_name_the_key(args, fragment):
    with pytest.raises(ValueError) as e:
        build_model(*args)
    assert fragment in str(e.value)


def test_registry_lists_the_zoo():
    assert available_models() == ["lstm", "mlp", "transformer"]
