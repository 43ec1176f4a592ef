"""Wake the shipper as soon as a write makes a window due for cutting.

The shipper looks at the head every `cut_interval_s` (15 s). At scrape pace that is
plenty: a window is due once, every 2 h. A backfill, or a Prometheus catching up after an
outage, sends up to a million samples a second, and 15 s of that is hours of data: the
head, and then the cut, would hold all of it at once (docs/head.md#cutting-into-blocks).
So each tenant's head watches the times it stores, and rings the alarm once when a sample
at or past its due time arrives.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gateway.head_batch import window_start

NEVER = int(np.iinfo(np.int64).max)


class CutAlarm:
    """Shared by the tenants' heads: when a window is due (set by the shipper) and how
    to wake it. Until `arm` is called (no shipper: tests, tools) it never rings."""

    def __init__(self) -> None:
        self.window_ms = 0
        self.grace_ms = 0
        self._wake: Callable[[], None] | None = None

    def arm(self, wake: Callable[[], None], *, window_ms: int, grace_ms: int) -> None:
        """Call `wake` (from any thread the head is written from) when a window is due:
        once the head holds a sample `grace_ms` past the end of the window of its oldest."""
        self.window_ms = window_ms
        self.grace_ms = grace_ms
        self._wake = wake

    def due_at(self, oldest: int) -> int:
        """The sample time from which the window holding `oldest` is due."""
        if self._wake is None:
            return NEVER
        return window_start(oldest, self.window_ms) + self.window_ms + self.grace_ms

    def ring(self) -> None:
        if self._wake is not None:
            self._wake()


class CutWatch:
    """One tenant's watch: the oldest time it holds and when that makes a cut due."""

    def __init__(self, alarm: CutAlarm) -> None:
        self.alarm = alarm
        self.oldest = NEVER
        self.due = NEVER

    def stored(self, oldest: int, newest: int) -> None:
        """Samples from `oldest` to `newest` were stored."""
        if oldest < self.oldest:
            self.oldest = oldest
            self.due = self.alarm.due_at(oldest)
        if newest >= self.due:
            self.due = NEVER  # once: the shipper sets the watch again after it looked
            self.alarm.ring()

    def reset(self, held: tuple[int, int] | None) -> None:
        """After the shipper looked: the (oldest, newest) time held, None when empty.

        A window already due and not cut (the cut failed, or is not this tenant's turn)
        leaves the watch quiet until the periodic look: ringing on every write would
        retry a failing cut at the rate of requests.
        """
        if held is None:
            self.oldest = self.due = NEVER
            return
        self.oldest = held[0]
        due = self.alarm.due_at(held[0])
        self.due = NEVER if due <= held[1] else due
