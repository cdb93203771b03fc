"""The CLI's progress display: one tqdm bar with the phase name in a terminal, plain lines elsewhere.

In a terminal the bar counts the current phase's units (images, iterations) and shows the whole job's ETA.
When the output is a file or a pipe, a line is printed at every phase change and at least every
``LINE_EVERY_S`` seconds (a background thread covers stretches without events): elapsed time, phase,
done / total, ETA and the estimated total. Messages (logs, checkpoints) go between them either way.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Callable, TextIO

from oste_core.engine.progress import RELATIVE_COST, JobEstimate, Phase, format_seconds

LINE_EVERY_S = 10.0
TICK_SLACK_S = 0.5  # the background thread prints this much early: a busy machine wakes a thread late


class ProgressPrinter:
    """Shows ``show(phase, done, total, eta_s)`` updates; ``close()`` when the job ends."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None, every_s: float = LINE_EVERY_S,
                 clock: Callable[[], float] = time.monotonic, background: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s, self.clock = every_s, clock
        self.started = clock()
        self._state: tuple[str, int, int, float, float] | None = None  # phase, done, total, eta, clock at eta
        self._last_line = -float("inf")
        self._lock = threading.Lock()
        self._bar = None
        self._stop = threading.Event()
        self._thread = None
        if self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=0, unit="", file=self.stream, dynamic_ncols=True)
        elif background:
            self._thread = threading.Thread(target=self._keep_printing, name="oste-progress", daemon=True)
            self._thread.start()

    def show(self, phase: str, done: int, total: int, eta_s: float, postfix: str = "") -> None:
        """The job's current phase, its units done of ``total`` and the seconds left in the whole job."""
        if not phase:
            return
        with self._lock:
            changed = self._state is None or self._state[0] != phase
            self._state = (phase, done, total, eta_s, self.clock())
            if self._bar is not None:
                if changed:
                    self._bar.reset(total=total)
                    self._bar.set_description(phase)
                self._bar.total = total
                self._bar.n = done
                self._bar.set_postfix_str(f"ETA {format_seconds(eta_s)}" + (f", {postfix}" if postfix else ""))
            elif changed or self.clock() - self._last_line >= self.every_s:
                self._print_line()

    def message(self, text: str) -> None:
        """A line of text between the progress updates."""
        with self._lock:
            if self._bar is not None:
                self._bar.write(text, file=self.stream)
            else:
                print(text, file=self.stream, flush=True)

    def tick(self, slack_s: float = 0.0) -> None:
        """Print the latest state if no line came for ``every_s - slack_s`` (its ETA counted down since then)."""
        with self._lock:
            if self._state is not None and self.clock() - self._last_line >= self.every_s - slack_s:
                self._print_line()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bar is not None:
            self._bar.close()

    def _keep_printing(self) -> None:
        while not self._stop.wait(min(max(self._last_line + self.every_s - TICK_SLACK_S - self.clock(), 0.25),
                                      self.every_s)):
            self.tick(TICK_SLACK_S)

    def _print_line(self) -> None:
        phase, done, total, eta_s, at = self._state
        now = self.clock()
        eta = max(eta_s - (now - at), 0.0)
        elapsed = now - self.started
        print(f"[{format_seconds(elapsed):>10}] {phase} {done}/{total}, ETA {format_seconds(eta)} "
              f"(total about {format_seconds(elapsed + eta)})", file=self.stream, flush=True)
        self._last_line = now


def pass_progress(phase: str, total: int, stream: TextIO | None = None) -> tuple[Callable[[int, int], None],
                                                                                 ProgressPrinter]:
    """An ``on_progress(done, total)`` for a pass over ``total`` images (``oste predict``, ``eval``, ``export``)
    that shows it as one phase with its ETA, and the printer to ``close()`` after it."""
    job = JobEstimate([Phase(phase, total, RELATIVE_COST[phase])])
    printer = ProgressPrinter(stream if stream is not None else sys.stdout)
    job.begin(phase)

    def on_progress(done: int, _total: int) -> None:
        job.advance(phase, done)
        printer.show(*job.snapshot())

    return on_progress, printer
