"""One compactor per tenant at a time: a lease object taken by compare-and-swap.

`<tenant>/compactor-lease.json` names its holder and when the lease runs out. Taking it
is a conditional put (if absent, or if it still has the version tag that was read and
has run out or is ours); the holder renews it before each step that changes the bucket
and gives it up at the end. A compactor killed while holding it blocks the tenant only
until it runs out. Clocks of different machines are compared, so the time to live must
be far longer than any skew. Without conditional puts (docs/compactor.md#the-lease)
the lease is best effort: run a single compactor per bucket.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass

from blocks.errors import NotFound, StrataError
from blocks.objstore.base import ObjectStore
from gateway.tenants import check_tenant

log = logging.getLogger(__name__)

LEASE_FILENAME = "compactor-lease.json"


class LeaseLost(StrataError):
    """Another compactor holds, or took over, the tenant's lease."""


def lease_key(tenant: str) -> str:
    """Where a tenant's compactor lease lives. The tenant comes from a bucket listing,
    which holds whatever anyone wrote there: checked like a tenant from a request."""
    return f"{check_tenant(tenant)}/{LEASE_FILENAME}"


def new_holder() -> str:
    """A name for this compactor process that no other process shares."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class LeaseState:
    """What a lease object says."""

    holder: str
    expires_ms: int

    def encode(self) -> bytes:
        """The object's bytes."""
        return json.dumps({"holder": self.holder, "expiresMs": self.expires_ms}).encode()

    @classmethod
    def decode(cls, data: bytes) -> LeaseState | None:
        """The state, or None for an unreadable object (treated as run out)."""
        try:
            doc = json.loads(data)
            return cls(str(doc["holder"]), int(doc["expiresMs"]))
        except (KeyError, TypeError, ValueError):
            return None


class Lease:
    """The lease on one tenant, as one holder sees it."""

    def __init__(self, store: ObjectStore, tenant: str, holder: str, ttl_s: float) -> None:
        self.store = store
        self.tenant = tenant
        self.holder = holder
        self.ttl_ms = int(ttl_s * 1000)
        self.key = lease_key(tenant)
        self._etag = ""

    def acquire(self) -> bool:
        """Take the lease if nobody holds it (or theirs ran out); whether we hold it now."""
        return self._put_ours(allow_foreign_expired=True)

    def renew(self) -> None:
        """Extend our lease; LeaseLost if another holder has it now."""
        if not self._put_ours(allow_foreign_expired=False):
            raise LeaseLost(f"compactor lease of tenant {self.tenant} was taken over")

    def release(self) -> None:
        """Give the lease up, if it is still ours (a stale release must not free another's)."""
        try:
            data, etag = self.store.get_with_etag(self.key)
        except NotFound:
            return
        state = LeaseState.decode(data)
        if state is None or state.holder != self.holder:
            return
        gone = LeaseState(self.holder, 0).encode()
        if not self.store.put_if_match(self.key, gone, etag):
            log.warning("compactor lease changed while releasing tenant=%s", self.tenant)

    def _put_ours(self, *, allow_foreign_expired: bool) -> bool:
        now = _now_ms()
        ours = LeaseState(self.holder, now + self.ttl_ms).encode()
        try:
            data, etag = self.store.get_with_etag(self.key)
        except NotFound:
            if not allow_foreign_expired and self._etag:
                return False  # it was ours and somebody removed it: do not assume
            return self._written(self.store.put_if_absent(self.key, ours))
        state = LeaseState.decode(data)
        free = state is None or state.expires_ms <= now
        if state is not None and state.holder == self.holder:
            pass
        elif not (free and allow_foreign_expired):
            if state is not None:
                log.info(
                    "tenant held by another compactor tenant=%s holder=%s for=%.0fs",
                    self.tenant,
                    state.holder,
                    (state.expires_ms - now) / 1000,
                )
            return False
        return self._written(self.store.put_if_match(self.key, ours, etag))

    def _written(self, ok: bool) -> bool:
        if not ok:
            return False
        if not self.store.supports_conditional_put:
            # Best effort: another writer may have put at the same moment; whoever reads
            # its own name back after a pause goes on.
            time.sleep(0.2)
            try:
                state = LeaseState.decode(self.store.get(self.key))
            except NotFound:
                return False
            if state is None or state.holder != self.holder:
                return False
        self._etag = self.store.get_with_etag(self.key)[1]
        return True


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
