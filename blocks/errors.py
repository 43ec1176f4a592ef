"""The one exception tree of Strata.

Every error a client or operator can see is a `StrataError`; the HTTP layer maps each
class to a status with `http_status` and answers the one-line `reason`, never a traceback.
"""

from __future__ import annotations


class StrataError(Exception):
    """Base of every error Strata raises on purpose."""

    http_status = 500

    @property
    def reason(self) -> str:
        """One line that tells the client what went wrong."""
        return str(self).splitlines()[0] if str(self) else type(self).__name__


class InvalidRequest(StrataError):
    """The request can never succeed as sent: the sender must not retry it (400)."""

    http_status = 400


class UnsupportedMediaType(InvalidRequest):
    """A content type or encoding Strata does not speak (415)."""

    http_status = 415


class RequestTooLarge(InvalidRequest):
    """The body, or what it declares it decompresses to, is over a limit (413)."""

    http_status = 413


class QueryLimitExceeded(InvalidRequest):
    """A query asks for more than a limit allows; it fails the same way every time (422)."""

    http_status = 422

    def __init__(self, detail: str, *, limit: str) -> None:
        self.limit = limit
        super().__init__(f"{detail} ({limit})")


class Unavailable(StrataError):
    """Strata cannot take the request now; the sender should retry (503 + Retry-After)."""

    http_status = 503
    retry_after_s = 5


class StorageError(Unavailable):
    """A storage operation failed (local disk or object store)."""

    def __init__(self, op: str, key: str, detail: str = "") -> None:
        self.op = op
        self.key = key
        super().__init__(f"storage {op} failed for {key}" + (f": {detail}" if detail else ""))


class CorruptWAL(StrataError):
    """A WAL segment holds bytes that are not a valid record."""

    def __init__(self, segment: str, offset: int, detail: str) -> None:
        self.segment = segment
        self.offset = offset
        super().__init__(f"corrupt WAL segment {segment} at offset {offset}: {detail}")


class CorruptBlock(StrataError):
    """Encoded block data that cannot be decoded."""

    def __init__(self, detail: str, *, block_id: str = "", obj: str = "", offset: int = -1) -> None:
        self.block_id = block_id
        self.obj = obj
        self.offset = offset
        where = "/".join(p for p in (block_id, obj) if p)
        super().__init__(f"corrupt block data{' in ' + where if where else ''}: {detail}")


class NotFound(StrataError):
    """An object or resource that does not exist (404)."""

    http_status = 404
