"""User-facing errors: one line, naming the key, the value and what is allowed.

Entry points catch `UsageError` and exit 2 without a traceback (unless --debug).
"""
from __future__ import annotations

import difflib
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
                lo_open: bool = False) -> None:
    """Reject numbers outside [lo, hi] (or (lo, hi] with lo_open) with a message naming the key."""
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi)
    if bad:
        lo_s = "" if lo is None else (f"> {lo}" if lo_open else f">= {lo}")
        hi_s = "" if hi is None else f"<= {hi}"
        rule = " and ".join(s for s in (lo_s, hi_s) if s)
        raise ConfigError(f"{key}={value!r} is out of range (must be {rule})")
