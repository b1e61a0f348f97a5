"""A progress line for long command-line operations (reseal, replay, apply of a large
hub.yaml): on a terminal one line rewritten in place a few times a second; otherwise (a
log, CI) a line at the start and end of each step and one every `every_s` between, so a
log shows that the operation is alive without a line per record.

Pure apart from `write` and `clock`, which the caller gives (stderr and the monotonic
clock in the CLI; a list and a fake clock in tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Progress", "render"]

TTY_EVERY_S = 0.1
LOG_EVERY_S = 5.0


def render(label: str, step: str, done: int, total: int | None) -> str:
    """``reseal: integrations 120/450 (26 %)``; without a total, ``… 120``."""
    if total is None:
        return f"{label}: {step} {done:,}"
    pct = 100 if total == 0 else min(100, done * 100 // total)
    return f"{label}: {step} {done:,}/{total:,} ({pct} %)"


class Progress:
    """One operation's progress: `step` starts a step, `update` reports within it,
    `clear` makes room for an ordinary output line, `finish` ends the last step."""

    def __init__(self, label: str, write: Callable[[str], object], *, tty: bool,
                 every_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self._write = write
        self.tty = tty
        self.every_s = every_s if every_s is not None else (TTY_EVERY_S if tty else LOG_EVERY_S)
        self._clock = clock
        self._step: str | None = None
        self._done = 0
        self._total: int | None = None
        self._last = float("-inf")
        self._shown = False  # a TTY line is on screen, not yet ended

    def step(self, name: str, total: int | None = None) -> None:
        """Start a step (ending the one before it)."""
        if self._step is not None:
            self._emit(final=True)
        self._step, self._done, self._total = name, 0, total
        self._emit()

    def update(self, done: int, total: int | None = None) -> None:
        """`done` so far in the current step (and its total, once known)."""
        self._done = done
        if total is not None:
            self._total = total
        if self._clock() - self._last >= self.every_s:
            self._emit()

    def advance(self, n: int = 1) -> None:
        self.update(self._done + n)

    def clear(self) -> None:
        """Take the in-place line off the terminal before something else is printed."""
        if self.tty and self._shown:
            self._write("\r\x1b[K")
            self._shown = False
            self._last = float("-inf")  # redrawn at the next update

    def finish(self) -> None:
        if self._step is not None:
            self._emit(final=True)
            self._step = None

    def _emit(self, final: bool = False) -> None:
        assert self._step is not None
        line = render(self.label, self._step, self._done, self._total)
        if final:
            line += " done"
        self._last = self._clock()
        if self.tty:
            self._write("\r\x1b[K" + line + ("\n" if final else ""))
            self._shown = not final
        else:
            self._write(line + "\n")
