"""Progress that fits where the output goes: a bar on a terminal, plain periodic lines otherwise.

A tqdm bar written to a file or a pipe floods it with carriage-return redraws; :class:`Progress`
draws the bar only when the stream is a terminal and otherwise prints one plain line every
``every`` units (and the last). :func:`model_steps` shows the denoising steps of a long
generation by counting the model's forward calls, so the samplers need no hook of their own.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # only an annotation: importing torch here made every `nara eval` load it
    import torch


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default stderr) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``12s``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """A bar on a terminal, else a plain line every ``every`` updates and at the last one.

    Args:
        total: updates expected; initial: updates already done (a resumed run).
        desc: the bar's label and the plain lines' first word.
        unit: the bar's unit.
        enabled: False shows nothing.
        every: plain-line interval in updates (default: a tenth of the run, at least 1).
        stream: where it writes (default stderr); a terminal gets the bar.
        clock: seconds since an epoch (a parameter so tests control the ETA).
    """

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        desc: str = "",
        unit: str = "it",
        enabled: bool = True,
        every: int | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total, self.done, self.desc = total, initial, desc
        self.start_done = initial
        self.stream = sys.stderr if stream is None else stream
        self.every = every or max(1, total // 10)
        self.next_line = (initial // self.every + 1) * self.every
        self.enabled = enabled
        self.clock = clock
        self.start = clock()
        self.bar = None
        if enabled and is_terminal(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True,
                file=self.stream,
            )  # fmt: skip

    def update(self, n: int = 1, **fields: Any) -> None:
        """Advance by ``n``; ``fields`` (already formatted strings) join the bar or the line."""
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            if fields:
                self.bar.set_postfix(fields, refresh=False)
            return
        if self.done >= self.next_line or self.done >= self.total:
            self.next_line = (self.done // self.every + 1) * self.every
            self.line(fields)

    def line(self, fields: dict[str, Any]) -> None:
        """One plain line: ``desc step done/total k v ... elapsed ETA``."""
        elapsed = self.clock() - self.start
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else None
        parts = [self.desc, f"{self.done}/{self.total}"]
        parts += [f"{k} {v}" for k, v in fields.items()]
        parts.append(f"elapsed {format_duration(elapsed)}")
        if eta is not None and self.done < self.total:
            parts.append(f"ETA {format_duration(eta)}")
        print(" ".join(p for p in parts if p), file=self.stream, flush=True)

    def write(self, text: str) -> None:
        """A message that does not break the bar."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def model_steps(
    model: torch.nn.Module, total: int, *, desc: str = "generate", stream: TextIO | None = None
) -> Iterator[None]:
    """Count ``model``'s forward calls as denoising steps on a bar (terminal only)."""
    progress = Progress(total, desc=desc, unit="step", stream=stream)
    if progress.bar is None:
        yield
        return
    handle = model.register_forward_hook(lambda *_: progress.update(1))
    try:
        yield
    finally:
        handle.remove()
        progress.close()
