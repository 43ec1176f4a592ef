"""open_store: an ObjectStore from a bucket URL; the URL forms are in docs/object-stores.md."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from blocks.errors import NotFound, StrataError
from blocks.objstore.base import ObjectStore

S3_OPTIONS = frozenset({"endpoint", "region", "path_style", "access_key", "secret_key"})
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


class InvalidStoreURL(StrataError):
    """A bucket URL or option that names no store: an operator's configuration error."""

    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        super().__init__(f"invalid bucket URL {url!r}: {detail}")


def open_store(url: str, **options: str) -> ObjectStore:
    """file:///abs/path, file://relative/path or s3://bucket/prefix?endpoint=…&region=…

    `options` add to (and win over) the URL's query: endpoint, region, path_style,
    access_key, secret_key. Backends are imported here, on demand, so that the embedded
    default never pays for importing boto3.
    """
    parts = urlsplit(url)
    if parts.username or parts.password:
        # Secrets in URLs end up in logs and `ps`; keep them in options or the environment.
        raise InvalidStoreURL(
            parts._replace(netloc=parts.hostname or "").geturl(), "no credentials in the URL"
        )
    if parts.scheme == "file":
        return _open_local(url, parts, options)
    if parts.scheme == "s3":
        return _open_s3(url, parts, options)
    raise InvalidStoreURL(url, "the scheme must be file:// or s3://")


def open_existing_store(url: str, **options: str) -> ObjectStore:
    """open_store for readers: a file:// bucket must already exist, since opening one
    creates its directory and a mistyped path would read as an empty bucket."""
    parts = urlsplit(url)
    path = unquote(parts.netloc + parts.path)
    if parts.scheme == "file" and path and not Path(path).is_dir():
        raise NotFound(f"no bucket directory at {Path(path).absolute()}")
    return open_store(url, **options)


def bucket_label(url: str) -> str:
    """The URL without its query, which may hold credentials: safe to print."""
    return urlsplit(url)._replace(query="", fragment="").geturl()


def _open_local(url: str, parts: SplitResult, options: dict[str, str]) -> ObjectStore:
    from blocks.objstore.local import LocalStore

    if parts.query or options:
        raise InvalidStoreURL(url, "a file:// bucket takes no options")
    # file:///abs has an empty host; file://data/bucket reads the "host" as the first
    # segment of a relative path, which is what `bucket_url="file://data/bucket"` means.
    path = unquote(parts.netloc + parts.path)
    if not path:
        raise InvalidStoreURL(url, "no directory")
    return LocalStore(Path(path))


def _open_s3(url: str, parts: SplitResult, options: dict[str, str]) -> ObjectStore:
    from blocks.objstore.s3 import S3Store

    if not parts.netloc:
        raise InvalidStoreURL(url, "no bucket (s3://bucket/optional/prefix)")
    settings = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
    settings.update(options)
    unknown = sorted(set(settings) - S3_OPTIONS)
    if unknown:
        raise InvalidStoreURL(url, f"unknown option {', '.join(unknown)}")
    if bool(settings.get("access_key")) != bool(settings.get("secret_key")):
        # boto3 would raise PartialCredentialsError from deep inside the client.
        raise InvalidStoreURL(
            parts._replace(query="").geturl(),
            "access_key and secret_key go together: set both or neither",
        )
    return S3Store(
        parts.netloc,
        prefix=unquote(parts.path).strip("/"),
        endpoint_url=settings.get("endpoint") or None,
        region=settings.get("region") or None,
        path_style=_parse_bool(url, settings.get("path_style", "false")),
        access_key=settings.get("access_key") or None,
        secret_key=settings.get("secret_key") or None,
    )


def _parse_bool(url: str, raw: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise InvalidStoreURL(url, f"path_style must be true or false, not {raw!r}")
