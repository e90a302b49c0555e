"""Config: recipes load, overrides apply and coerce, bad keys and values fail naming the key."""
import pytest

from train.config import load_config, parse_override, recipe_names, to_toml, build_config
from train.errors import ConfigError
import tomllib


def test_every_recipe_loads():
    assert set(recipe_names()) >= {"mlp", "lstm", "transformer"}
    for name in recipe_names():
        cfg = load_config(name, None, [])
        assert cfg.model.name == name


def test_overrides_are_typed_and_win():
    cfg = load_config("mlp", None, ["optim.name=rmsprop", "optim.lr=3e-4", "train.steps=7", "optim.lr=5e-4"])
    assert cfg.optim.name == "rmsprop" and cfg.optim.lr == 5e-4 and cfg.train.steps == 7
    cfg = load_config("mlp", None, ["optim.lr=1"])  # an int where a float is expected is fine
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)


def test_parse_override_falls_back_to_string():
    assert parse_override("comm.nic=eth0") == ("comm", "nic", "eth0")
    assert parse_override("dist.static_graph=true") == ("dist", "static_graph", True)


@pytest.mark.parametrize("override, fragment", [
    ("optim.nme=adam", "did you mean 'optim.name'"),
    ("optm.lr=1", "did you mean 'optim'"),
    ("optim.lr=-1", "optim.lr=-1"),
    ("optim.name=adamm", "did you mean 'adam'"),
    ("train.steps=ten", "train.steps='ten' has the wrong type"),
    ("train.compile=1", "must be true or false"),
    ("comm.hook=fp8", "choose from allreduce, bf16, fp16, none, powersgd"),
    ("lr=1", "section.key=value"),
])
def test_bad_overrides_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config("mlp", None, [override])
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_user_toml_merges_and_bad_toml_fails(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[optim]\nname = "sgd"\n[train]\nsteps = 3\n')
    cfg = load_config("lstm", str(good), ["train.steps=4"])
    assert (cfg.model.name, cfg.optim.name, cfg.train.steps) == ("lstm", "sgd", 4)
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config("mlp", str(bad), [])
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config("mlp", str(tmp_path / "missing.toml"), [])


def test_resolved_config_round_trips():
    cfg = load_config("transformer", None, ["model.dropout=0.1", "optim.lr=2e-4"])
    again = build_config(tomllib.loads(to_toml(cfg)))
    assert again == cfg
    assert again.model.options == {"dropout": 0.1}
