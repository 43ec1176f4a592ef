"""Tenant ids: which tenant a request is for, and which ids are safe to use at all.

A tenant id becomes a WAL field, a directory (upload queue, compactor work space) and an
object-key prefix, so it is held to a strict character set that can never climb out of
its prefix. Rules and reasons in docs/security.md#tenants.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from starlette.datastructures import Headers

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
    if not TENANT_ID.fullmatch(tenant):
        raise InvalidRequest(
            f"invalid tenant id {tenant[:64]!r}: use letters, digits, '_', '-' and '.'"
        )
    if tenant.startswith("."):
        # '.' and '..' would climb directories; other dot names collide with what stores
        # and work directories keep beside the tenants ('.strata-lock', '.lock').
        raise InvalidRequest(f"invalid tenant id {tenant[:64]!r}: must not start with '.'")
    return tenant


def tenant_from_headers(headers: Mapping[str, str], default_tenant: str) -> str:
    """The tenant a request names in X-Scope-OrgID, or the default one.

    Several X-Scope-OrgID headers are refused: a proxy that adds the header after the
    client's own would otherwise leave the client's choice first, and the one read.
    """
    if isinstance(headers, Headers):
        values = headers.getlist(TENANT_HEADER)
    else:
        value = headers.get(TENANT_HEADER)
        values = [] if value is None else [value]
    if not values:
        return check_tenant(default_tenant)
    if len(values) > 1:
        raise InvalidRequest(f"{len(values)} X-Scope-OrgID headers; send one")
    # Only HTTP's own whitespace around the value; any other character is checked.
    return check_tenant(values[0].strip(" \t"))
