"""SIGTERM/SIGINT: finish the current step, checkpoint, flush, exit with the signal's code.

A second signal of the same kind interrupts at once (KeyboardInterrupt / default handler).
"""
from __future__ import annotations

import signal


class StopRequest:
    def __init__(self):
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def install(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # asked twice: stop now
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention for death by signal, so torchrun and schedulers see why."""
        return 128 + self.signum if self.signum else 0
