"""The object-store contract, run against every backend (zarr's StoreTests shape).

`ObjectStoreContract` holds the behaviour every ObjectStore promises; `TestLocalStore`
and `TestS3Store` (a real SeaweedFS) subclass it and add what is backend-specific.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from botocore.awsrequest import AWSRequest

from blocks.errors import NotFound, StorageError
from blocks.objstore import InvalidKey, InvalidRange, InvalidStoreURL, ObjectStore, open_store
from blocks.objstore.local import TMP_PREFIX, LocalStore
from blocks.objstore.s3 import MULTIPART_BYTES, S3Store
from tests.support.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS

REPO = Path(__file__).resolve().parents[2]

INVALID_KEYS = [
    "",
    "/abs",
    "a//b",
    "a/",
    ".",
    "..",
    "./a",
    "a/../b",
    "a/./b",
    "nul\0byte",
    ".strata-tmp-0123",
    "a/.strata-lock",
    "k" * 1025,
    "a/" + "s" * 256,
]
INVALID_PREFIXES = ["/a", "a//b", "../a", "a/./", "nul\0"]
# Names that look odd but are valid everywhere: spaces, UTF-8, dots inside, a leading dot.
UNUSUAL_KEYS = ["with space/ü-ß/x.y_z~!", ".hidden", "...", "a..b/c=d+e", "s" * 255]


def key_methods(store: ObjectStore) -> dict[str, Callable[[str], object]]:
    """Every method that takes a key, called with harmless other arguments."""
    return {
        "put": lambda key: store.put(key, b"x"),
        "get": store.get,
        "get_range": lambda key: store.get_range(key, 0, 1),
        "delete": store.delete,
        "size": store.size,
        "stat": store.stat,
        "put_file": lambda key: store.put_file(key, Path(__file__)),
        "exists": store.exists,
        "put_if_absent": lambda key: store.put_if_absent(key, b"x"),
        "get_with_etag": store.get_with_etag,
        "put_if_match": lambda key: store.put_if_match(key, b"x", "etag"),
    }


def refuses(call: Callable[[str], object], key: str) -> bool:
    """Whether `call(key)` raises InvalidKey."""
    try:
        call(key)
    except InvalidKey:
        return True
    return False


def timed_error(call: Callable[[], object]) -> tuple[BaseException | None, float]:
    """What `call()` raised (None if nothing) and how long it took to do so."""
    started = time.monotonic()
    try:
        call()
    except Exception as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


def put_many(store: ObjectStore, keys: list[str]) -> None:
    """Put tiny objects concurrently: listings of many keys, quickly."""
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: store.put(key, key.encode()), keys))


class ObjectStoreContract:
    """Behaviour every ObjectStore backend promises; a backend's test class subclasses this."""

    # Enough to be "many"; the S3 subclass crosses ListObjectsV2's 1000-key page.
    many_keys = 50
    # Writers racing for one key in test_racing_put_if_absent_has_exactly_one_winner.
    racers = 8

    @pytest.fixture
    def store(self) -> Iterator[ObjectStore]:
        """An empty store; each backend's subclass overrides this."""
        raise NotImplementedError

    def test_put_then_get_round_trips(self, store: ObjectStore) -> None:
        store.put("tenant/block/meta.json", b'{"v": 1}')
        assert store.get("tenant/block/meta.json") == b'{"v": 1}'

    def test_put_overwrites_with_the_whole_new_object(self, store: ObjectStore) -> None:
        for data in (b"first", b"a longer second version", b"3rd"):
            store.put("k", data)
            assert store.get("k") == data
            assert store.size("k") == len(data)

    def test_empty_object_exists_and_reads_empty(self, store: ObjectStore) -> None:
        store.put("empty", b"")
        assert store.get("empty") == b""
        assert store.get_range("empty", 0, 10) == b""
        assert store.size("empty") == 0
        assert store.exists("empty")

    def test_missing_key_is_not_found(self, store: ObjectStore) -> None:
        store.put("dir/present", b"x")
        for read in (
            lambda: store.get("dir/absent"),
            lambda: store.get_range("dir/absent", 0, 4),
            lambda: store.get_range("dir/absent", 2, 2),
            lambda: store.size("dir/absent"),
            lambda: store.get_with_etag("dir/absent"),
            lambda: store.get("dir"),  # a prefix is not an object
            lambda: store.get("dir/present/below"),
        ):
            with pytest.raises(NotFound):
                read()
        assert not store.exists("dir/absent")
        assert not store.exists("dir")

    def test_range_reads_are_end_exclusive_and_stop_at_the_end(self, store: ObjectStore) -> None:
        store.put("r", b"0123456789")
        assert store.get_range("r", 0, 3) == b"012"
        assert store.get_range("r", 3, 10) == b"3456789"
        assert store.get_range("r", 9, 10) == b"9"
        assert store.get_range("r", 8, 20) == b"89"
        assert store.get_range("r", 10, 20) == b""
        assert store.get_range("r", 15, 20) == b""
        assert store.get_range("r", 4, 4) == b""

    def test_invalid_ranges_are_refused(self, store: ObjectStore) -> None:
        store.put("r", b"0123456789")
        for start, end in ((-1, 3), (5, 2)):
            with pytest.raises(InvalidRange):
                store.get_range("r", start, end)

    def test_list_is_recursive_sorted_and_by_prefix(self, store: ObjectStore) -> None:
        keys = ["t/x/1", "t/x/2", "t/x-y/3", "t/xa", "t/y/deep/er/4", "u/5", "v"]
        for key in reversed(keys):
            store.put(key, b"")
        assert store.list("") == sorted(keys)
        assert store.list("t/") == ["t/x-y/3", "t/x/1", "t/x/2", "t/xa", "t/y/deep/er/4"]
        assert store.list("t/x") == ["t/x-y/3", "t/x/1", "t/x/2", "t/xa"]
        assert store.list("t/x/") == ["t/x/1", "t/x/2"]
        assert store.list("t/y/de") == ["t/y/deep/er/4"]
        assert store.list("t/x/1") == ["t/x/1"]
        assert store.list("nothing/") == []
        assert store.list("nothing") == []

    def test_list_returns_every_key_when_there_are_many(self, store: ObjectStore) -> None:
        keys = [f"many/{i:05d}" for i in range(self.many_keys)]
        put_many(store, keys)
        assert store.list("many/") == keys

    def test_delete_is_idempotent(self, store: ObjectStore) -> None:
        store.put("d/gone", b"x")
        store.put("d/kept", b"y")
        store.delete("d/gone")
        store.delete("d/gone")
        store.delete("d/never-was")
        store.delete("d")
        assert not store.exists("d/gone")
        assert store.list("d/") == ["d/kept"]
        assert store.get("d/kept") == b"y"

    @pytest.mark.parametrize("key", INVALID_KEYS)
    def test_invalid_keys_are_refused_by_every_method(self, store: ObjectStore, key: str) -> None:
        accepted = [name for name, call in key_methods(store).items() if not refuses(call, key)]
        assert accepted == []

    @pytest.mark.parametrize("prefix", INVALID_PREFIXES)
    def test_invalid_prefixes_are_refused(self, store: ObjectStore, prefix: str) -> None:
        with pytest.raises(InvalidKey):
            store.list(prefix)

    def test_unusual_but_valid_keys_round_trip(self, store: ObjectStore) -> None:
        for key in UNUSUAL_KEYS:
            store.put(key, key.encode())
        assert store.list("") == sorted(UNUSUAL_KEYS)
        for key in UNUSUAL_KEYS:
            assert store.get(key) == key.encode()

    def test_every_byte_value_round_trips(self, store: ObjectStore) -> None:
        data = bytes(range(256)) * 4
        store.put("bin", data)
        assert store.get("bin") == data
        assert store.get_range("bin", 250, 262) == data[250:262]

    def test_large_object_round_trips(self, store: ObjectStore) -> None:
        data = random.Random(8).randbytes(8 * 1024 * 1024 + 3)
        store.put("large", data)
        assert store.size("large") == len(data)
        assert store.get("large") == data
        assert store.get_range("large", 5_000_000, 5_000_100) == data[5_000_000:5_000_100]

    def test_put_file_round_trips_a_file_larger_than_an_upload_part(
        self, store: ObjectStore, tmp_path: Path
    ) -> None:
        data = random.Random(9).randbytes(MULTIPART_BYTES + 12345)
        source = tmp_path / "segment"
        source.write_bytes(data)
        store.put_file("t/b/chunks/000001", source)
        assert store.size("t/b/chunks/000001") == len(data)
        assert store.get("t/b/chunks/000001") == data
        empty = tmp_path / "empty"
        empty.write_bytes(b"")
        store.put_file("t/b/chunks/000001", empty)
        assert store.get("t/b/chunks/000001") == b""

    def test_stat_gives_size_and_write_time(self, store: ObjectStore) -> None:
        # The stores keep whole seconds at worst (S3's Last-Modified).
        before_ms = int(time.time() * 1000) - 1000
        store.put("t/x", b"12345")
        after_ms = int(time.time() * 1000) + 1000
        info = store.stat("t/x")
        assert info.size == 5
        assert before_ms <= info.modified_ms <= after_ms
        with pytest.raises(NotFound):
            store.stat("t/absent")

    def test_put_if_absent_writes_only_once(self, store: ObjectStore) -> None:
        assert store.put_if_absent("lock", b"first")
        assert not store.put_if_absent("lock", b"second")
        assert store.get("lock") == b"first"

    def test_put_if_match_swaps_only_the_version_it_read(self, store: ObjectStore) -> None:
        store.put("index.json", b"v1")
        data, etag = store.get_with_etag("index.json")
        assert data == b"v1"
        assert store.put_if_match("index.json", b"v2", etag)
        assert not store.put_if_match("index.json", b"v3", etag)  # stale tag
        data, fresh = store.get_with_etag("index.json")
        assert data == b"v2"
        assert fresh != etag
        assert store.put_if_match("index.json", b"v4", fresh)
        assert store.get("index.json") == b"v4"

    def test_put_if_match_on_a_missing_key_writes_nothing(self, store: ObjectStore) -> None:
        store.put("was-here", b"v1")
        _, etag = store.get_with_etag("was-here")
        store.delete("was-here")
        assert not store.put_if_match("was-here", b"v2", etag)
        assert not store.exists("was-here")

    def test_racing_put_if_absent_has_exactly_one_winner(self, store: ObjectStore) -> None:
        if not store.supports_conditional_put:
            pytest.fail(f"{store!r} cannot put conditionally; this contract needs it")
        threads = self.racers
        barrier = threading.Barrier(threads)

        def race(i: int) -> bool:
            barrier.wait()
            return store.put_if_absent("race", str(i).encode())

        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(race, range(threads)))
        assert results.count(True) == 1
        assert store.get("race") == str(results.index(True)).encode()


class TestLocalStore(ObjectStoreContract):
    """The contract on a local directory, plus crash safety and what a directory implies."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[ObjectStore]:
        with LocalStore(tmp_path / "bucket") as store:
            yield store

    def test_crash_mid_put_is_invisible(self, tmp_path: Path) -> None:
        root = tmp_path / "bucket"
        with LocalStore(root) as store:
            store.put("t/b/meta.json", b"old")
            # What a crash between write and rename leaves: temporary files, one of them
            # the only trace of a key never completed.
            (root / "t/b" / f"{TMP_PREFIX}dead1").write_bytes(b"new, half writ")
            (root / "t/c").mkdir()
            (root / "t/c" / f"{TMP_PREFIX}dead2").write_bytes(b"partial")
        with LocalStore(root) as store:
            assert store.get("t/b/meta.json") == b"old"
            assert store.list("") == ["t/b/meta.json"]
            assert store.list("t/c") == []
            assert not store.exists("t/c/meta.json")

    def test_delete_removes_directories_it_leaves_empty(self, tmp_path: Path) -> None:
        with LocalStore(tmp_path / "bucket") as store:
            store.put("t/b/chunks/000001", b"x")
            store.put("t/keep", b"y")
            store.delete("t/b/chunks/000001")
            assert not (tmp_path / "bucket/t/b").exists()
            assert (tmp_path / "bucket/t/keep").exists()

    def test_a_key_cannot_also_be_a_prefix(self, store: ObjectStore) -> None:
        store.put("a/b", b"x")
        with pytest.raises(InvalidKey):
            store.put("a", b"y")
        with pytest.raises(InvalidKey):
            store.put("a/b/c", b"z")
        assert store.list("") == ["a/b"]

    def test_compare_and_swap_holds_across_processes(self, tmp_path: Path) -> None:
        root = tmp_path / "bucket"
        with LocalStore(root) as store:
            store.put("counter", b"0")
        script = textwrap.dedent(
            f"""
            from pathlib import Path
            from blocks.objstore.local import LocalStore
            store = LocalStore(Path({str(root)!r}))
            for _ in range(25):
                while True:
                    data, etag = store.get_with_etag("counter")
                    if store.put_if_match("counter", str(int(data) + 1).encode(), etag):
                        break
            """
        )
        workers = [subprocess.Popen([sys.executable, "-c", script], cwd=REPO) for _ in range(4)]
        assert [worker.wait(timeout=30) for worker in workers] == [0] * 4
        with LocalStore(root) as store:
            assert store.get("counter") == b"100"


class TestS3Store(ObjectStoreContract):
    """The contract on a real S3 server (SeaweedFS), each test under a fresh prefix."""

    many_keys = 1100
    # SeaweedFS makes losing conditional writers wait in 1 s steps (measured: up to 4 s
    # with 8 racers); 4 still race, with less waiting.
    racers = 4

    @pytest.fixture
    def store(self, seaweedfs: SeaweedFS) -> Iterator[ObjectStore]:
        with self.open(seaweedfs) as store:
            yield store

    @staticmethod
    def open(seaweedfs: SeaweedFS) -> S3Store:
        store = open_store(
            seaweedfs.store_url(f"test-{uuid.uuid4().hex[:12]}"),
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
        )
        assert isinstance(store, S3Store)
        return store

    def test_seaweedfs_enforces_conditional_puts(self, store: ObjectStore) -> None:
        assert store.supports_conditional_put

    def test_a_server_ignoring_preconditions_is_detected(self, seaweedfs: SeaweedFS) -> None:
        with self.open(seaweedfs) as store:
            # Strip the condition headers on the way out: the server then sees plain PUTs,
            # as an S3 server that ignores them would.
            def strip(request: AWSRequest, **_: object) -> None:
                for name in ("If-None-Match", "If-Match"):
                    if name in request.headers:
                        del request.headers[name]

            store._client.meta.events.register("before-sign.s3.PutObject", strip)
            assert not store.supports_conditional_put
            # The documented best-effort fallback still answers sequential callers right.
            assert store.put_if_absent("k", b"1")
            assert not store.put_if_absent("k", b"2")
            _, etag = store.get_with_etag("k")
            assert not store.put_if_match("k", b"3", '"stale"')
            assert store.put_if_match("k", b"4", etag)
            assert store.get("k") == b"4"
            assert store.list("") == ["k"]

    def test_a_stopped_server_is_a_storage_error_soon(self, seaweedfs: SeaweedFS) -> None:
        with self.open(seaweedfs) as store:
            store.put("survives/restart", b"kept")
            seaweedfs.stop()
            try:
                calls: list[Callable[[], object]] = [
                    lambda: store.get("survives/restart"),
                    lambda: store.put("new", b"x"),
                    lambda: store.list(""),
                    lambda: store.exists("survives/restart"),
                ]
                # In parallel: each call spends its retries' backoff (seconds) first.
                with ThreadPoolExecutor(len(calls)) as pool:
                    outcomes = list(pool.map(timed_error, calls))
            finally:
                seaweedfs.start()
            for error, elapsed_s in outcomes:
                assert isinstance(error, StorageError), error
                assert error.http_status == 503
                assert elapsed_s < 15
            assert store.get("survives/restart") == b"kept"


def test_open_store_reads_file_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_store(f"file://{tmp_path}/abs") as store:
        assert isinstance(store, LocalStore)
        assert store.root == tmp_path / "abs"
    monkeypatch.chdir(tmp_path)
    with open_store("file://data/bucket") as store:
        assert isinstance(store, LocalStore)
        assert store.root == tmp_path / "data/bucket"


def test_open_store_reads_s3_urls() -> None:
    url = "s3://bucket/some/prefix/?endpoint=http://127.0.0.1:1&region=eu-west-1&path_style=true"
    with open_store(url, access_key="a", secret_key="b") as store:
        assert isinstance(store, S3Store)
        assert (store.bucket, store.prefix) == ("bucket", "some/prefix/")
        assert store.endpoint_url == "http://127.0.0.1:1"
    with open_store("s3://bucket") as store:
        assert isinstance(store, S3Store)
        assert store.prefix == ""


@pytest.mark.parametrize(
    "url",
    [
        "bucket",
        "gs://bucket",
        "s3://",
        "s3://bucket?colour=blue",
        "s3://bucket?path_style=maybe",
        "s3://key:hunter2@bucket",
        "s3://bucket?secret_key=hunter2",
        "s3://bucket?access_key=hunter2",
        "file://",
        "file:///tmp/x?endpoint=y",
    ],
)
def test_open_store_refuses_bad_urls(url: str) -> None:
    with pytest.raises(InvalidStoreURL) as caught:
        open_store(url)
    assert "hunter2" not in str(caught.value), "a credential in an error message"
