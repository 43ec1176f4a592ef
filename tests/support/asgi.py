"""An ASGI app driven in process, one raw request at a time, from synchronous test code.

No HTTP client sits between the test and the app: header names and values go in as raw
bytes (NUL, 0xff, anything a hostile client can put on the wire, as a server hands them
to the app), and a request costs about a tenth of a millisecond, so fuzz tests can send
hundreds of thousands. The app's lifespan (WAL replay, shipper) runs on the private
event loop, which turns whenever a request is being answered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from fastapi import FastAPI

T = TypeVar("T")
HeaderList = Sequence[tuple[bytes, bytes]]
Message = MutableMapping[str, Any]

# A request that takes longer than this is a hang, and fails the test that sent it.
REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Answer:
    """What the app sent back for one request."""

    status: int
    headers: Mapping[str, str]  # lower-case names; the last value of repeated names
    body: bytes

    @property
    def text(self) -> str:
        """The body as text (bytes that are not UTF-8 replaced)."""
        return self.body.decode("utf-8", "replace")


def header_list(headers: Mapping[str, str] | HeaderList) -> list[tuple[bytes, bytes]]:
    """Raw header pairs from a str mapping (latin-1, as HTTP/1.1 carries them) or pairs."""
    if isinstance(headers, Mapping):
        return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return [(k.lower(), v) for k, v in headers]


class InProcessApp:
    """One started app (lifespan entered, ready) on a private event loop."""

    def __init__(self, app: FastAPI, *, ready_path: str = "/-/ready") -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._lifespan = app.router.lifespan_context(app)
        self.run(self._lifespan.__aenter__())
        deadline = time.monotonic() + 10
        while self.request("GET", ready_path).status != 200:
            if time.monotonic() > deadline:
                self.close()
                raise TimeoutError("the app never became ready")
            self.run(asyncio.sleep(0.005))

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run a coroutine on the app's loop (the app's background tasks run meanwhile)."""
        return self.loop.run_until_complete(awaitable)

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | HeaderList = (),
        body: bytes = b"",
    ) -> Answer:
        """Send one request as a server would hand it over (Content-Length set)."""
        raw = header_list(headers)
        if not any(name == b"content-length" for name, _ in raw):
            raw.append((b"content-length", str(len(body)).encode()))
        call = self._call(method, path, raw, body)
        return self.run(asyncio.wait_for(call, REQUEST_TIMEOUT_S))

    def post(self, path: str, body: bytes, headers: Mapping[str, str] | HeaderList = ()) -> Answer:
        """POST `body` to `path`."""
        return self.request("POST", path, headers, body)

    async def _call(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Answer:
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 40000),
            "server": ("strata", 80),
        }
        finished = asyncio.Event()
        body_sent = False
        status = 0
        answer_headers: dict[str, str] = {}
        chunks: list[bytes] = []

        async def receive() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await finished.wait()  # as a server does: the client is there until the end
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    answer_headers[name.decode("latin-1").lower()] = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    finished.set()

        await self.app(scope, receive, send)
        finished.set()
        return Answer(status, answer_headers, b"".join(chunks))

    def close(self) -> None:
        """Run the app's shutdown and close the loop."""
        try:
            self.run(self._lifespan.__aexit__(None, None, None))
        finally:
            self.loop.close()

    def __enter__(self) -> InProcessApp:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
