"""The HTTP response that carries a long streamed remote-read answer.

Starlette's StreamingResponse runs each answer in an anyio task group beside a listener
for the client going away, and a sync background task in the thread pool; for a read of
a few milliseconds that machinery cost more than the read (a 1-series streamed read spent
a third of its time there). This one sends the frames in a plain loop, fetching each
next batch in a worker thread, and watches for a disconnect with one asyncio task.
Answers that fit in the first batches never get here: they are sent as one body.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class FrameStream(Response):
    """`first` (bytes ready now), then every item of `rest`, each produced in a worker
    thread; `on_end(completed)` is called exactly once, whether the answer was sent
    whole, the client went away, or producing the rest failed."""

    def __init__(
        self,
        first: bytes,
        rest: Iterator[bytes],
        media_type: str,
        on_end: Callable[[bool], None],
    ) -> None:
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(None)
        self._first = first
        self._rest = rest
        self._on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        completed = False
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": self._first, "more_body": True})
            while not gone.done():
                chunk = await asyncio.to_thread(_next_or_none, self._rest)
                if chunk is None:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    completed = True
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            gone.cancel()
            self._on_end(completed)


async def _disconnected(receive: Receive) -> None:
    """Return once the client has gone (the request body was read before the answer)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _next_or_none(items: Iterator[bytes]) -> bytes | None:
    return next(items, None)
