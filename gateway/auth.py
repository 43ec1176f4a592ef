"""Who may write and read which tenant: the auth file's credentials, checked on every
request before its body is read.

Off unless `auth_file` is set. File format, what each endpoint needs and how to make
entries: docs/security.md#authentication.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from blocks.errors import InvalidRequest, StrataError
from gateway.config import ConfigError, GatewayConfig
from gateway.http import HEALTHY_PATH, METRICS_PATH, READY_PATH, error_response
from gateway.tenants import TENANT_HEADER, check_tenant, tenant_from_headers

log = logging.getLogger(__name__)

# In a credential's write or read list: every tenant. Never a valid tenant id itself.
ANY_TENANT = "*"
# A 401 offers both schemes Prometheus's remote_write/remote_read clients can send.
CHALLENGES = ('Bearer realm="strata"', 'Basic realm="strata", charset="UTF-8"')
PASSWORD_SCHEME = "scrypt"
# scrypt cost of `hash_password`: 16 MiB and tens of milliseconds per check. A password
# that passed is remembered (keyed by an HMAC, never stored), so a Prometheus sending it
# with every request pays this once per process.
SCRYPT_N = 1 << 14
SCRYPT_R = 8
SCRYPT_P = 1
# The most memory (128·N·R·P bytes) a hash in the auth file may make one check take.
MAX_SCRYPT_BYTES = 256 << 20
MIN_SALT_BYTES = 8
MIN_DIGEST_BYTES = 16
# Passwords remembered as verified; forgotten all at once past this (a handful of
# clients need a handful of entries).
MAX_VERIFIED_PASSWORDS = 1024
# The reasons of strata_auth_failures_total.
FAILURE_REASONS = (
    "missing_credentials",
    "malformed_credentials",
    "invalid_credentials",
    "tenant_not_allowed",
    "admin_required",
)


class Access(Enum):
    """What a path needs of the credential a request brings."""

    OPEN = "open"  # nothing: health and readiness probes
    AUTHENTICATED = "authenticated"  # any valid credential
    WRITE = "write"  # a credential that may write the request's tenant
    READ = "read"  # a credential that may read the request's tenant
    ADMIN = "admin"  # a credential marked admin


class AuthFailure(StrataError):
    """A request refused by authentication; `failure` is its metrics reason."""

    def __init__(self, detail: str, *, failure: str) -> None:
        self.failure = failure
        super().__init__(detail)


class Unauthenticated(AuthFailure):
    """No credentials, or none the auth file knows (401 with WWW-Authenticate)."""

    http_status = 401


class Forbidden(AuthFailure):
    """Valid credentials that may not do what the request asks (403)."""

    http_status = 403


@dataclass(frozen=True, slots=True)
class Grant:
    """What one credential may do: the tenants it may write and read ('*': any), and
    whether it may use the admin endpoints."""

    name: str
    write: frozenset[str]
    read: frozenset[str]
    admin: bool = False

    def tenants(self, access: Access) -> frozenset[str]:
        """The tenants (or '*') of the write or read list; empty for other accesses."""
        if access is Access.WRITE:
            return self.write
        if access is Access.READ:
            return self.read
        return frozenset()

    def allows(self, access: Access, tenant: str) -> bool:
        """Whether this credential may write or read this tenant."""
        tenants = self.tenants(access)
        return ANY_TENANT in tenants or tenant in tenants

    def implied_tenant(self, access: Access) -> str | None:
        """The tenant of a request without X-Scope-OrgID: the only one this credential
        may write (or read), if there is exactly one."""
        tenants = self.tenants(access)
        if len(tenants) == 1 and ANY_TENANT not in tenants:
            return next(iter(tenants))
        return None


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A salted scrypt hash, written `scrypt:N:R:P:SALT_HEX:HASH_HEX` in the auth file."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """The hash a `password` entry holds; ValueError saying what is wrong with it."""
        parts = text.split(":")
        if len(parts) != 6 or parts[0] != PASSWORD_SCHEME:
            raise ValueError("password must be scrypt:N:R:P:SALT_HEX:HASH_HEX")
        try:
            n, r, p = (int(part) for part in parts[1:4])
            salt, digest = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
        except ValueError:
            raise ValueError("password: N, R, P must be numbers, salt and hash hex") from None
        if n < 2 or n & (n - 1) or r < 1 or p < 1:
            raise ValueError("password: N must be a power of 2, R and P at least 1")
        if 128 * n * r * p > MAX_SCRYPT_BYTES:
            raise ValueError(f"password: scrypt N·R·P asks more than {MAX_SCRYPT_BYTES} bytes")
        if len(salt) < MIN_SALT_BYTES or len(digest) < MIN_DIGEST_BYTES:
            raise ValueError(
                f"password: salt of at least {MIN_SALT_BYTES} bytes "
                f"and hash of at least {MIN_DIGEST_BYTES} needed"
            )
        return cls(n, r, p, salt, digest)

    def verify(self, password: bytes) -> bool:
        """Whether the password hashes to the digest; slow on purpose, constant-time compare."""
        computed = hashlib.scrypt(
            password,
            salt=self.salt,
            n=self.n,
            r=self.r,
            p=self.p,
            maxmem=2 * 128 * self.n * self.r * self.p,
            dklen=len(self.digest),
        )
        return hmac.compare_digest(computed, self.digest)


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """A `password` entry for the auth file, with a fresh random salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=2 * 128 * n * r * p)
    return f"{PASSWORD_SCHEME}:{n}:{r}:{p}:{salt.hex()}:{digest.hex()}"


def token_sha256(token: str) -> str:
    """The `sha256` entry of a bearer token in the auth file."""
    return hashlib.sha256(token.encode()).hexdigest()


# Checked when a user name is unknown, so that it costs the time a known one does.
_UNKNOWN_USER = PasswordHash(
    SCRYPT_N, SCRYPT_R, SCRYPT_P, b"\0" * 16, hashlib.sha256(b"unknown").digest()
)


@dataclass(frozen=True, slots=True)
class UserEntry:
    """A basic-auth user of the auth file."""

    username: bytes
    password: PasswordHash
    grant: Grant


@dataclass(frozen=True, slots=True)
class Credentials:
    """The auth file's bearer tokens (by SHA-256) and basic-auth users."""

    tokens: tuple[tuple[bytes, Grant], ...]
    users: tuple[UserEntry, ...]

    def by_token(self, token: bytes) -> Grant | None:
        """The grant of a bearer token; every entry compared, each in constant time."""
        digest = hashlib.sha256(token).digest()
        found = None
        for known, grant in self.tokens:
            if hmac.compare_digest(digest, known):
                found = grant
        return found

    def by_password(self, username: bytes, password: bytes) -> Grant | None:
        """The grant of the user if the password is theirs. Slow (scrypt), for unknown
        users too; call it off the event loop."""
        user = None
        for entry in self.users:
            if hmac.compare_digest(username, entry.username):
                user = entry
        if user is None:
            _UNKNOWN_USER.verify(password)
            return None
        return user.grant if user.password.verify(password) else None


def load_credentials(path: Path) -> Credentials:
    """The auth file's credentials; ConfigError naming the entry and what is wrong."""
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError("auth_file", str(path), exc.strerror or str(exc)) from None
    except ValueError as exc:
        raise ConfigError("auth_file", str(path), f"not JSON: {exc}") from None
    try:
        return parse_credentials(doc)
    except ValueError as exc:
        raise ConfigError("auth_file", str(path), str(exc)) from None


def parse_credentials(doc: Any) -> Credentials:
    """Credentials from the auth file's JSON document; ValueError naming the entry."""
    if not isinstance(doc, dict):
        raise ValueError("must be a JSON object with 'tokens' and/or 'users'")
    _no_other_keys("the file", doc, {"tokens", "users"})
    tokens = tuple(_token(f"tokens[{i}]", e) for i, e in enumerate(_list(doc, "tokens")))
    users = tuple(_user(f"users[{i}]", e) for i, e in enumerate(_list(doc, "users")))
    if not tokens and not users:
        raise ValueError("no tokens and no users: nobody could write or read")
    if len({digest for digest, _ in tokens}) < len(tokens):
        raise ValueError("a token is listed twice")
    if len({user.username for user in users}) < len(users):
        raise ValueError("a username is listed twice")
    return Credentials(tokens, users)


def _list(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key} must be a list")
    return value


def _no_other_keys(where: str, entry: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ValueError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})"
        )


def _token(where: str, entry: Any) -> tuple[bytes, Grant]:
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be an object")
    _no_other_keys(where, entry, {"name", "sha256", "write", "read", "admin"})
    name, digest = entry.get("name"), entry.get("sha256")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: 'name' (what 403 answers and logs call it) is required")
    if not isinstance(digest, str) or len(digest) != 64:
        raise ValueError(f"{where}: 'sha256' must be the 64 hex digits of the token's SHA-256")
    try:
        raw = bytes.fromhex(digest)
    except ValueError:
        raise ValueError(f"{where}: 'sha256' must be hex") from None
    return raw, _grant(where, name, entry)


def _user(where: str, entry: Any) -> UserEntry:
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be an object")
    _no_other_keys(where, entry, {"username", "password", "write", "read", "admin"})
    username, password = entry.get("username"), entry.get("password")
    if not isinstance(username, str) or not username or ":" in username:
        raise ValueError(f"{where}: 'username' is required and holds no ':'")
    if not isinstance(password, str):
        raise ValueError(f"{where}: 'password' (scrypt:N:R:P:SALT_HEX:HASH_HEX) is required")
    try:
        hashed = PasswordHash.parse(password)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return UserEntry(username.encode(), hashed, _grant(where, username, entry))


def _grant(where: str, name: str, entry: dict[str, Any]) -> Grant:
    admin = entry.get("admin", False)
    if not isinstance(admin, bool):
        raise ValueError(f"{where}: 'admin' must be true or false")
    return Grant(name, _tenants(where, entry, "write"), _tenants(where, entry, "read"), admin)


def _tenants(where: str, entry: dict[str, Any], key: str) -> frozenset[str]:
    tenants = entry.get(key, [])
    if not isinstance(tenants, list) or not all(isinstance(t, str) for t in tenants):
        raise ValueError(f"{where}: '{key}' must be a list of tenant ids")
    for tenant in tenants:
        if tenant != ANY_TENANT:
            try:
                check_tenant(tenant)
            except InvalidRequest as exc:
                raise ValueError(f"{where}: '{key}': {exc.reason}") from None
    return frozenset(tenants)


def decode_basic(param: str) -> tuple[bytes, bytes]:
    """User and password of a basic-auth header parameter; Unauthenticated if malformed."""
    try:
        decoded = base64.b64decode(param.encode("latin-1"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise Unauthenticated(
            "basic auth credentials are not base64", failure="malformed_credentials"
        ) from None
    username, sep, password = decoded.partition(b":")
    if not sep:
        raise Unauthenticated(
            "basic auth credentials are not USER:PASSWORD", failure="malformed_credentials"
        )
    return username, password


class Authenticator:
    """Turns a request's Authorization header into the grant of a known credential."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        # Keys the cache of verified passwords: what is kept cannot be reversed or
        # tested offline, and differs per process.
        self._cache_key = secrets.token_bytes(32)
        self._verified: dict[bytes, Grant] = {}
        # One scrypt at a time: a flood of wrong passwords takes one core, not all.
        self._hashing = asyncio.Semaphore(1)

    async def authenticate(self, headers: Headers) -> Grant:
        """The grant of the request's credentials; Unauthenticated if none is valid."""
        values = headers.getlist("authorization")
        if not values:
            raise Unauthenticated(
                "credentials required: a bearer token or basic auth",
                failure="missing_credentials",
            )
        if len(values) > 1:
            raise Unauthenticated("several Authorization headers", failure="malformed_credentials")
        scheme, _, param = values[0].strip().partition(" ")
        param = param.strip()
        if scheme.lower() == "bearer" and param:
            # Header values arrive decoded as latin-1; that gives back the bytes sent.
            grant = self.credentials.by_token(param.encode("latin-1"))
        elif scheme.lower() == "basic" and param:
            grant = await self._check_password(*decode_basic(param))
        else:
            raise Unauthenticated(
                "Authorization must be 'Bearer TOKEN' or 'Basic USER:PASSWORD in base64'",
                failure="malformed_credentials",
            )
        if grant is None:
            raise Unauthenticated("invalid credentials", failure="invalid_credentials")
        return grant

    async def _check_password(self, username: bytes, password: bytes) -> Grant | None:
        key = hmac.digest(
            self._cache_key, len(username).to_bytes(4, "big") + username + password, "sha256"
        )
        grant = self._verified.get(key)
        if grant is not None:
            return grant
        async with self._hashing:
            grant = await asyncio.to_thread(self.credentials.by_password, username, password)
        if grant is not None:
            if len(self._verified) >= MAX_VERIFIED_PASSWORDS:
                self._verified.clear()
            self._verified[key] = grant
        return grant


class AuthMetrics:
    """strata_auth_failures_total, on the registry passed in."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.failures = Counter(
            "strata_auth_failures_total",
            "Requests refused by authentication (401) or authorization (403), by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in FAILURE_REASONS:
            self.failures.labels(reason)


class AuthMiddleware:
    """ASGI middleware in front of every route: a request to a path that is not OPEN
    needs a credential allowed what the path does. For WRITE and READ paths the tenant
    the credential may use is then the one X-Scope-OrgID holds for the route, so the
    route can never see another."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        policy: Mapping[str, Access],
        default_tenant: str,
        metrics: AuthMetrics,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.policy = policy
        self.default_tenant = default_tenant
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Admit the request to the app, or answer 400, 401 or 403 without reading it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Paths missing from the policy need a valid credential: nothing is open by mistake.
        access = self.policy.get(scope["path"], Access.AUTHENTICATED)
        if access is not Access.OPEN:
            try:
                scope = await self.admit(scope, access)
            except AuthFailure as exc:
                self.metrics.failures.labels(exc.failure).inc()
                log.debug("request refused path=%s reason=%s", scope["path"], exc.reason)
                response = error_response(exc)
                if isinstance(exc, Unauthenticated):
                    for challenge in CHALLENGES:
                        response.headers.append("WWW-Authenticate", challenge)
                await response(scope, receive, send)
                return
            except InvalidRequest as exc:
                await error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def admit(self, scope: Scope, access: Access) -> Scope:
        """The scope to pass on (X-Scope-OrgID set for WRITE and READ), or AuthFailure."""
        headers = Headers(scope=scope)
        grant = await self.authenticator.authenticate(headers)
        if access is Access.AUTHENTICATED:
            return scope
        if access is Access.ADMIN:
            if not grant.admin:
                raise Forbidden(
                    f"credential {grant.name!r} may not use admin endpoints",
                    failure="admin_required",
                )
            return scope
        implied = grant.implied_tenant(access)
        if implied is not None and TENANT_HEADER not in headers:
            tenant = implied
        else:
            tenant = tenant_from_headers(headers, self.default_tenant)
        if not grant.allows(access, tenant):
            raise Forbidden(
                f"credential {grant.name!r} may not {access.value} tenant {tenant!r}",
                failure="tenant_not_allowed",
            )
        return with_tenant(scope, tenant)


def with_tenant(scope: Scope, tenant: str) -> Scope:
    """A copy of the scope whose only X-Scope-OrgID header names `tenant`."""
    name = TENANT_HEADER.encode()
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != name]
    return {**scope, "headers": [*headers, (name, tenant.encode())]}


def install_auth(
    app: FastAPI,
    config: GatewayConfig,
    registry: CollectorRegistry,
    routes: Mapping[str, Access],
) -> None:
    """With `auth_file` set, put AuthMiddleware in front of `app`: `routes` says what each
    data path needs; /-/healthy and /-/ready are open, /metrics too unless auth_metrics;
    any other path needs a valid credential. ConfigError for a bad auth file."""
    if not config.auth_file:
        return
    credentials = load_credentials(Path(config.auth_file))
    metrics_access = Access.AUTHENTICATED if config.auth_metrics else Access.OPEN
    policy = {
        HEALTHY_PATH: Access.OPEN,
        READY_PATH: Access.OPEN,
        METRICS_PATH: metrics_access,
        **routes,
    }
    app.add_middleware(
        AuthMiddleware,
        authenticator=Authenticator(credentials),
        policy=policy,
        default_tenant=config.default_tenant,
        metrics=AuthMetrics(registry),
    )
    log.info(
        "authentication on tokens=%d users=%d metrics=%s",
        len(credentials.tokens),
        len(credentials.users),
        metrics_access.value,
    )
