"""S3Store: objects in an S3 bucket (AWS, MinIO, SeaweedFS) through boto3.

Every botocore error is translated in `map_s3_errors`, the one place that knows them.
Contract in docs/object-stores.md#s3store.
"""

from __future__ import annotations

import builtins
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from blocks.errors import NotFound, StorageError
from blocks.objstore.base import (
    RESERVED_SEGMENT_PREFIX,
    ObjectStat,
    ObjectStore,
    check_key,
    check_prefix,
    check_range,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import HeadObjectOutputTypeDef

log = logging.getLogger(__name__)

# Three attempts with backoff ride out a restarting server yet fail in seconds, not
# minutes, when it is down: callers turn StorageError into 503 and retry later anyway.
MAX_ATTEMPTS = 3
CONNECT_TIMEOUT_S = 5
# Long enough for a large GET on a slow link; a stuck server still ends within a minute.
READ_TIMEOUT_S = 30
# Files larger than this are uploaded in parts of this size; one part is what memory holds.
MULTIPART_BYTES = 16 << 20

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
# 412 is the refusal; 409 ConditionalRequestConflict is AWS's answer to a conditional
# write racing another one on the same key: either way the caller re-reads and retries.
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
# Where the conditional-put probe writes; no valid key can name it (base.check_key).
PROBE_DIR = RESERVED_SEGMENT_PREFIX + "probe"
_STALE_ETAG = '"00000000000000000000000000000000"'


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def map_s3_errors(op: str, key: str) -> Iterator[None]:
    """Translate boto3/botocore errors: a missing object to NotFound, the rest to StorageError."""
    try:
        yield
    except ClientError as exc:
        code = _error_code(exc)
        if code in _NOT_FOUND_CODES:
            raise NotFound(f"object not found: {key}") from exc
        message = exc.response.get("Error", {}).get("Message", "")
        raise StorageError(op, key, f"{code} {message}".strip()) from exc
    except (BotoCoreError, Boto3Error) as exc:
        raise StorageError(op, key, str(exc)) from exc


class S3Store(ObjectStore):
    """An object store in an S3 bucket, optionally under a key prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        path_style: bool = False,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        self.bucket = bucket
        stripped = prefix.strip("/")
        self.prefix = check_key(stripped) + "/" if stripped else ""
        self.endpoint_url = endpoint_url
        config = Config(
            retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            s3={"addressing_style": "path" if path_style else "auto"},
        )
        # A session per store: boto3's default session is shared and not thread-safe.
        self._client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=config,
        )
        # One thread per upload: the gateway uploads blocks one at a time on a small
        # machine, and parallel parts would multiply the memory a transfer holds.
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_BYTES,
            multipart_chunksize=MULTIPART_BYTES,
            max_concurrency=1,
            use_threads=False,
        )
        self._conditional_put: bool | None = None
        self._probe_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Store(bucket={self.bucket!r}, prefix={self.prefix!r})"

    @property
    def supports_conditional_put(self) -> bool:
        """Whether the server honours If-None-Match/If-Match on PUT: probed once, never assumed."""
        with self._probe_lock:
            if self._conditional_put is None:
                self._conditional_put = self._probe_conditional_put()
            return self._conditional_put

    def put(self, key: str, data: bytes) -> None:
        """One PutObject: S3 makes an object visible only once it is complete."""
        full = self._full(key)
        with map_s3_errors("put", key):
            self._client.put_object(Bucket=self.bucket, Key=full, Body=data)

    def put_file(self, key: str, path: Path) -> None:
        """boto3's managed transfer: multipart past MULTIPART_BYTES, read piece by piece."""
        full = self._full(key)
        with map_s3_errors("put_file", key):
            self._client.upload_file(str(path), self.bucket, full, Config=self._transfer)

    def get(self, key: str) -> bytes:
        """One GetObject; NotFound if absent."""
        full = self._full(key)
        with map_s3_errors("get", key):
            return self._client.get_object(Bucket=self.bucket, Key=full)["Body"].read()

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """A ranged GetObject; a range starting past the end (416) reads as empty."""
        full = self._full(key)
        check_range(key, start, end)
        if start == end:
            # HTTP cannot ask for zero bytes; the contract still wants NotFound if absent.
            self.size(key)
            return b""
        with map_s3_errors("get_range", key):
            try:
                response = self._client.get_object(
                    Bucket=self.bucket, Key=full, Range=f"bytes={start}-{end - 1}"
                )
            except ClientError as exc:
                if _error_code(exc) != "InvalidRange":
                    raise
                return b""
            data = response["Body"].read()
        # A server that ignores Range answers 200 with the whole object.
        return data if "ContentRange" in response else data[start:end]

    def list(self, prefix: str) -> builtins.list[str]:
        """ListObjectsV2 through the paginator, so more than 1000 keys come back too."""
        check_prefix(prefix)
        paginator = self._client.get_paginator("list_objects_v2")
        keys: builtins.list[str] = []
        with map_s3_errors("list", prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                keys.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        # AWS lists in byte order; SeaweedFS walks directories ('a/x/1' before 'a/x-y').
        return sorted(k for k in keys if not k.startswith(PROBE_DIR + "/"))

    def delete(self, key: str) -> None:
        """DeleteObject, which S3 answers 204 for an absent key as well."""
        full = self._full(key)
        try:
            with map_s3_errors("delete", key):
                self._client.delete_object(Bucket=self.bucket, Key=full)
        except NotFound:
            pass  # some servers answer 404 where AWS answers 204

    def size(self, key: str) -> int:
        """HeadObject's ContentLength; NotFound if absent."""
        return self._head("size", key)["ContentLength"]

    def stat(self, key: str) -> ObjectStat:
        """HeadObject's ContentLength and LastModified; NotFound if absent."""
        head = self._head("stat", key)
        return ObjectStat(
            size=head["ContentLength"],
            modified_ms=int(head["LastModified"].timestamp() * 1000),
        )

    def exists(self, key: str) -> bool:
        """Whether HeadObject finds the key."""
        try:
            self._head("exists", key)
        except NotFound:
            return False
        return True

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """PutObject with If-None-Match: *; without server support a racy check, then put."""
        full = self._full(key)
        if not self.supports_conditional_put:
            if self.exists(key):
                return False
            self.put(key, data)
            return True
        with map_s3_errors("put_if_absent", key):
            return self._put_conditionally(full, data, if_none_match="*")

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """GetObject's body and ETag; NotFound if absent."""
        full = self._full(key)
        with map_s3_errors("get_with_etag", key):
            response = self._client.get_object(Bucket=self.bucket, Key=full)
            return response["Body"].read(), response["ETag"]

    def put_if_match(self, key: str, data: bytes, etag: str) -> bool:
        """PutObject with If-Match; without server support a racy compare, then put."""
        full = self._full(key)
        if not self.supports_conditional_put:
            try:
                current = self._head("put_if_match", key)["ETag"]
            except NotFound:
                return False
            if current != etag:
                return False
            self.put(key, data)
            return True
        with map_s3_errors("put_if_match", key):
            return self._put_conditionally(full, data, if_match=etag)

    def close(self) -> None:
        """Close the client's connection pool."""
        self._client.close()

    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _head(self, op: str, key: str) -> HeadObjectOutputTypeDef:
        full = self._full(key)
        with map_s3_errors(op, key):
            return self._client.head_object(Bucket=self.bucket, Key=full)

    def _put_conditionally(
        self, full: str, data: bytes, *, if_none_match: str = "", if_match: str = ""
    ) -> bool:
        """True if written, False if the server refused the precondition; other errors raise."""
        try:
            if if_match:
                self._client.put_object(Bucket=self.bucket, Key=full, Body=data, IfMatch=if_match)
            else:
                self._client.put_object(
                    Bucket=self.bucket, Key=full, Body=data, IfNoneMatch=if_none_match
                )
        except ClientError as exc:
            # AWS answers If-Match on an absent key with 404, SeaweedFS with 412.
            if _error_code(exc) in _PRECONDITION_CODES | _NOT_FOUND_CODES:
                return False
            raise
        return True

    def _probe_conditional_put(self) -> bool:
        """Ask the server whether it enforces preconditions on PUT, on a throwaway key.

        A server that does not know the headers either rejects them (4xx, 501) or, worse,
        ignores them and overwrites; both count as "not supported".
        """
        full = f"{self.prefix}{PROBE_DIR}/{uuid.uuid4().hex}"
        with map_s3_errors("probe", full):
            try:
                honoured = (
                    self._put_conditionally(full, b"1", if_none_match="*")
                    and not self._put_conditionally(full, b"2", if_none_match="*")
                    and not self._put_conditionally(full, b"3", if_match=_STALE_ETAG)
                )
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
                if status >= 500 and _error_code(exc) != "NotImplemented":
                    raise  # the server is in trouble: say so, and probe again next time
                honoured = False
            finally:
                self._client.delete_object(Bucket=self.bucket, Key=full)
        if not honoured:
            log.warning(
                "s3 server does not enforce conditional puts bucket=%s endpoint=%s; "
                "put_if_absent and put_if_match are best effort",
                self.bucket,
                self.endpoint_url,
            )
        return honoured
