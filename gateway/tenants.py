"""Tenant ids: which tenant a request is for, and which ids are safe to use at all.

A tenant id becomes a WAL field, a directory and an object-key prefix, so it is held to
a strict character set that can never climb out of its prefix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from blocks.errors import InvalidRequest

TENANT_HEADER = "x-scope-orgid"
MAX_TENANT_BYTES = 150
TENANT_ID = re.compile(r"[A-Za-z0-9_.\-]+")


def check_tenant(tenant: str) -> str:
    """The tenant id if it is safe; InvalidRequest naming the problem otherwise."""
    if not tenant:
        raise InvalidRequest("empty tenant id")
    if len(tenant.encode()) > MAX_TENANT_BYTES:
        raise InvalidRequest(f"tenant id longer than {MAX_TENANT_BYTES} bytes")
    if tenant in (".", "..") or not TENANT_ID.fullmatch(tenant):
        raise InvalidRequest(
            f"invalid tenant id {tenant[:64]!r}: use letters, digits, '_', '-' and '.'"
        )
    return tenant


def tenant_from_headers(headers: Mapping[str, str], default_tenant: str) -> str:
    """The tenant a request names in X-Scope-OrgID, or the default one."""
    value = headers.get(TENANT_HEADER)
    if value is None:
        return default_tenant
    return check_tenant(value.strip())
