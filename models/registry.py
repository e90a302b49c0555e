"""Model registry: names -> classes with flavors; one way to build any model."""
from __future__ import annotations

import dataclasses
import difflib

from models.base import ZooModel

_MODELS: dict[str, type] = {}


def register(name: str):
    def wrap(cls):
        cls.name = name
        _MODELS[name] = cls
        return cls
    return wrap


def _hint(word, choices) -> str:
    found = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{found[0]}'?" if found else ""


def available_models() -> list[str]:
    return sorted(_MODELS)


def model_class(name: str) -> type:
    if name not in _MODELS:
        raise ValueError(f"model.name={name!r} is not allowed (choose from {', '.join(available_models())}"
                         f"{_hint(name, _MODELS)})")
    return _MODELS[name]


def task_of(name: str) -> str:
    return model_class(name).task


def flavors_of(name: str) -> list[str]:
    return list(model_class(name).FLAVORS)


def build_model(name: str, flavor: str, data_spec: dict, overrides: dict | None = None) -> ZooModel:
    """The model `name` at size `flavor`, shaped by the data (classes, vocabulary, sequence length)."""
    cls = model_class(name)
    if flavor not in cls.FLAVORS:
        raise ValueError(f"model.flavor={flavor!r} is not allowed for {name} (choose from "
                         f"{', '.join(cls.FLAVORS)}{_hint(flavor, cls.FLAVORS)})")
    cfg = cls.FLAVORS[flavor]
    fields = [f.name for f in dataclasses.fields(cfg)]
    for key in overrides or {}:
        if key not in fields:
            raise ValueError(f"model.{key} is not a field of {name} (fields: {', '.join(fields)}"
                             f"{_hint(key, fields)})")
    try:
        cfg = dataclasses.replace(cfg, **(overrides or {}))
    except TypeError as e:
        raise ValueError(f"model options for {name}: {e}") from None
    return cls(cfg, data_spec)


def check_positive(cls_name: str, **values) -> None:
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"model.{key}={value!r} is out of range for {cls_name} (must be an integer >= 1)")


def check_dropout(value) -> None:
    if not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"model.dropout={value!r} is out of range (must be >= 0 and < 1)")
