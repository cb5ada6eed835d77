"""Preemption: SIGTERM or SIGINT ends the run after the current step, with a save.

Cloud platforms send SIGTERM before they take a machine back. The first signal sets a flag
(`should_stop`; the loop all-reduces it so every rank stops after the same iteration, and
the checkpoint hook saves on the way out). More SIGTERMs change nothing (a platform may send
one to the process group while the launcher forwards its own); a second Ctrl-C interrupts
at once without saving. `spawn_forwarder` makes a parent that
spawned local ranks (`--nproc-per-node`) pass SIGTERM on to them.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from typing import Any

from atelier.core.log import get_logger
from atelier.llm.train.hooks import TrainHooks, TrainState

log = get_logger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal(TrainHooks):
    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}
        self.state: TrainState | None = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            return  # the same SIGTERM again (to the process group and forwarded): one request
        self.received = signum
        if signum == signal.SIGINT:  # a second Ctrl-C interrupts at once
            signal.signal(signum, signal.default_int_handler)
        if self.state is not None and not self.state.env.is_main:
            return  # one line for the run, from rank 0
        it = self.state.iteration + 1 if self.state is not None else 0
        again = " (Ctrl-C again to stop at once without saving)" if signum == signal.SIGINT else ""
        print(
            f"atelier: {signal.Signals(signum).name} received: finishing iteration {it}, then "
            f"saving{again}",
            file=sys.stderr,
            flush=True,
        )

    def on_start(self, state: TrainState) -> None:
        self.state = state
        for s in SIGNALS:
            self.previous[s] = signal.signal(s, self._handle)

    def should_stop(self, state: TrainState) -> bool:
        return self.received is not None

    @property
    def name(self) -> str | None:
        return signal.Signals(self.received).name if self.received is not None else None

    def on_end(self, state: TrainState, reason: str) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def spawn_forwarder() -> None:
    """In the parent of spawned ranks: pass SIGTERM to every child (Ctrl-C reaches them
    already, as they share the terminal's process group)."""

    def forward(signum: int, frame: Any) -> None:
        for child in multiprocessing.active_children():
            if child.pid is not None:
                os.kill(child.pid, signum)

    def wait(signum: int, frame: Any) -> None:
        pass  # the children save and exit; the parent waits for them (not SIG_IGN: inherited)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, wait)
