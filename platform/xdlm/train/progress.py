"""A one-line progress display (step, loss, tokens/s, ETA) printed by rank 0.

Ray forwards worker output to the driver's terminal, so this is what a user watching
``xdlm train`` sees.
"""

from __future__ import annotations

import sys
import time


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    def __init__(self, total_steps: int, start_step: int = 0, enabled: bool = True) -> None:
        self.total = total_steps
        self.enabled = enabled
        self._t0 = time.monotonic()
        self._step0 = start_step

    def tokens_per_s(self, step: int, tokens_per_step: int) -> float:
        elapsed = time.monotonic() - self._t0
        return (step - self._step0) * tokens_per_step / elapsed if elapsed > 0 else 0.0

    def update(self, step: int, loss: float, tokens_per_step: int) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self._t0
        rate = (step - self._step0) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        print(
            f"step {step}/{self.total} | loss {loss:.4f} | "
            f"{self.tokens_per_s(step, tokens_per_step):,.0f} tok/s | ETA {_duration(eta) if rate else '?'}",
            file=sys.stdout, flush=True,
        )

    def note(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stdout, flush=True)
