"""The run's configuration: recipe TOML <- user TOML <- dotted overrides -> typed, validated dataclasses.

Every component owns its dataclass (data, optim, dist, comm); this module only merges sources,
rejects unknown keys (suggesting the nearest name) and coerces types, so a bad run fails here,
before any process group exists.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from train.comm.config import CommConfig
from train.data import DataConfig
from train.distributed import DistConfig
from train.errors import ConfigError, check_choice, check_range, nearest
from train.guard import parse_policy
from train.optim import OptimConfig


@dataclass(kw_only=True)
class ModelConfig:
    name: str = "mlp"
    """Registry name of the model (see models.available_models())."""
    flavor: str = "debug"
    """Named size of the model."""
    options: dict = field(default_factory=dict)
    """Any other [model] keys: fields of the flavor's own config (validated by the model registry)."""


@dataclass(kw_only=True)
class TrainConfig:
    steps: int = 100
    """Optimizer steps to run."""
    batch_size: int = 64
    """Global batch: items per optimizer step over all ranks and micro-steps."""
    grad_accum: int = 1
    """Micro-steps per optimizer step (DDP syncs only on the last)."""
    seed: int = 1234
    """Seeds model init, data order and dropout (0 <= seed < 2**32)."""
    precision: str = "fp32"
    """fp32 | bf16 (autocast) | fp16 (autocast with a grad scaler)."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    peak_tflops: float = 0.0
    """Per-device peak for MFU; 0 = look the device up (train/perf.py), no MFU if unknown."""
    log_every: int = 10
    """Steps between metric logs (console, TensorBoard, cross-rank summary)."""
    eval_every: int = 0
    """Steps between eval passes; 0 disables eval."""
    eval_batches: int = 4
    """Batches per eval pass."""
    ckpt_every: int = 0
    """Steps between checkpoints; 0 = only the final one."""
    keep_ckpts: int = 3
    """Newest checkpoints kept on disk."""
    resume: str = "off"
    """off | auto (newest good checkpoint of the run folder, if any) | a checkpoint path."""
    overwrite: bool = False
    """Allow starting afresh in a run folder that already holds a run (its old files are replaced)."""
    nonfinite: str = "stop"
    """A non-finite loss or gradient norm: stop (exit 3, summary says why) | skip:N (skip up to N updates)."""
    run_name: str = ""
    """Folder name under runs/; "" = <model>-<torchrun id or timestamp>."""

    def __post_init__(self):
        check_range("train.steps", self.steps, 1)
        check_range("train.batch_size", self.batch_size, 1)
        check_range("train.grad_accum", self.grad_accum, 1)
        check_range("train.seed", self.seed, 0, 2**32, hi_open=True)
        check_choice("train.precision", self.precision, ("fp32", "bf16", "fp16"))
        check_range("train.log_every", self.log_every, 1)
        check_range("train.peak_tflops", self.peak_tflops, 0)
        check_range("train.eval_every", self.eval_every, 0)
        check_range("train.eval_batches", self.eval_batches, 1)
        check_range("train.ckpt_every", self.ckpt_every, 0)
        check_range("train.keep_ckpts", self.keep_ckpts, 1)
        parse_policy(self.nonfinite)
        if "/" in self.run_name or self.run_name in (".", ".."):
            raise ConfigError(f"train.run_name={self.run_name!r} must be a plain folder name")


@dataclass(kw_only=True)
class RunConfig:
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig
    train: TrainConfig
    dist: DistConfig
    comm: CommConfig


SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig,
            "train": TrainConfig, "dist": DistConfig, "comm": CommConfig}


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("train.recipes").iterdir() if p.name.endswith(".toml"))


def read_toml(path: str | Path, what: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{what} {str(path)!r} cannot be read ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{what} {str(path)!r} is not valid TOML ({e})") from None


def load_recipe(name: str) -> dict:
    check_choice("--recipe", name, recipe_names())
    return tomllib.loads(resources.files("train.recipes").joinpath(f"{name}.toml").read_text())


def parse_override(text: str) -> tuple[str, str, object]:
    """`optim.lr=3e-4` -> ("optim", "lr", 0.0003); values are TOML literals, else plain strings."""
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. optim.lr=3e-4)")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return section, name, value


def merge(base: dict, extra: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in extra.items():
        if not isinstance(values, dict):
            raise ConfigError(f"top-level key {section!r} must be a [section] table")
        out.setdefault(section, {}).update(values)
    return out


def _coerce(key: str, value, hint):
    """Accept a TOML value for a field of type `hint`, or fail naming the key and the type."""
    want = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (bool, int, float, str) and (type(value) is not hint):
        raise ConfigError(f"{key}={value!r} has the wrong type (must be {want})")
    return value


def build_section(section: str, values: dict):
    cls = SECTIONS[section]
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "options"]
    kwargs, options = {}, {}
    for key, value in values.items():
        if key in names:
            kwargs[key] = _coerce(f"{section}.{key}", value, hints[key])
        elif section == "model":
            options[key] = value  # the model registry validates flavor fields
        else:
            hint = nearest(key, names)
            tail = f"; did you mean '{section}.{hint}'?" if hint else f" (keys: {', '.join(names)})"
            raise ConfigError(f"unknown key '{section}.{key}'{tail}")
    if section == "model":
        kwargs["options"] = options
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None


def build_config(raw: dict) -> RunConfig:
    for section in raw:
        if section not in SECTIONS:
            hint = nearest(section, SECTIONS)
            tail = f"; did you mean '{hint}'?" if hint else f" (sections: {', '.join(SECTIONS)})"
            raise ConfigError(f"unknown section '{section}'{tail}")
    return RunConfig(**{s: build_section(s, raw.get(s, {})) for s in SECTIONS})


def load_config(recipe: str | None, config_path: str | None, overrides: list[str]) -> RunConfig:
    raw = load_recipe(recipe) if recipe else {}
    if config_path:
        raw = merge(raw, read_toml(config_path, "--config"))
    for text in overrides:
        section, name, value = parse_override(text)
        raw = merge(raw, {section: {name: value}})
    return build_config(raw)


def to_dict(cfg: RunConfig) -> dict:
    out = {}
    for section in SECTIONS:
        values = dataclasses.asdict(getattr(cfg, section))
        out[section] = {**values.pop("options", {}), **values} if section == "model" else values
    return out


def to_toml(cfg: RunConfig) -> str:
    """The resolved config, loadable again with --config (flat tables of scalars and lists)."""
    lines = []
    for section, values in to_dict(cfg).items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)
