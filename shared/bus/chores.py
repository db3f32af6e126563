"""Chores: work a worker process does on a clock rather than for an event (deleting the files
of expired exports). The worker's loop calls ``Chores.run_due`` as it turns (at least once a
second when idle); each chore runs at start and then every ``every`` seconds, on the worker's
thread, so it must be short. A failing chore is logged and tried again at its next turn: it
never stops the worker. Several replicas of a worker each run their chores, so a chore must
be safe to run twice at once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chore:
    name: str
    every: float  # seconds
    run: Callable[[], object]


class Chores:
    def __init__(
        self, chores: Sequence[Chore], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._chores = list(chores)
        self._clock = clock
        self._next = [clock()] * len(self._chores)  # each runs at the first turn

    def run_due(self) -> None:
        now = self._clock()
        for n, chore in enumerate(self._chores):
            if now < self._next[n]:
                continue
            self._next[n] = now + chore.every
            try:
                chore.run()
            except Exception:
                log.exception("chore %r failed; it runs again in %.0f s", chore.name, chore.every)
