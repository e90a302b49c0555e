"""User-facing errors: one line, naming the key, the value and what is allowed.

Entry points catch `UsageError` and exit 2 without a traceback (unless --debug).
"""
from __future__ import annotations

import difflib
import math
from typing import Iterable


class UsageError(ValueError):
    """Bad input from the user: printed as one line, exit code 2."""


class ConfigError(UsageError):
    """A configuration key or value that cannot be accepted."""


def nearest(word: str, choices: Iterable[str]) -> str | None:
    """The closest choice to a typo, or None when nothing is close."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def choice_error(key: str, value: object, allowed: Iterable[str]) -> ConfigError:
    """`key='value' is not allowed (choose from a, b, c; did you mean 'b'?)`."""
    allowed = sorted(allowed)
    hint = nearest(str(value), allowed)
    tail = f"; did you mean '{hint}'?" if hint else ""
    return ConfigError(f"{key}={value!r} is not allowed (choose from {', '.join(allowed)}{tail})")


def check_choice(key: str, value: str, allowed: Iterable[str]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise choice_error(key, value, allowed)


def check_range(key: str, value: float, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """Reject numbers that are not finite or lie outside [lo, hi] (open ends with lo_open/hi_open).

    NaN passes every comparison and inf passes every lower bound, so finiteness is checked
    first: a learning rate of nan or inf must fail here, not inside the optimizer later.
    """
    lo_s = "" if lo is None else (f"> {lo}" if lo_open else f">= {lo}")
    hi_s = "" if hi is None else (f"< {hi}" if hi_open else f"<= {hi}")
    rule = " and ".join(s for s in ("finite", lo_s, hi_s) if s)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}={value!r} is not a number (must be {rule})")
    if not math.isfinite(value):
        raise ConfigError(f"{key}={value!r} is not a finite number (must be {rule})")
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or \
          (hi is not None and (value >= hi if hi_open else value > hi))
    if bad:
        raise ConfigError(f"{key}={value!r} is out of range (must be {rule.removeprefix('finite and ')})")
