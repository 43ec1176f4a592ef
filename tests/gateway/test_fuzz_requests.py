"""Fuzzing both endpoints: generated and mutated requests never get a 5xx or a wrong answer.

hypothesis generates requests (label sets of any bytes, timestamps over all of int64,
values of any 64 bits, matchers, ranges, hints, response types, header values); each
example then becomes a batch of requests: itself and mutations of its protobuf (bytes
flipped, cut, spliced; fields repeated, dropped, reordered, retagged) and of its snappy
block (the same, and lying length preambles), drawn from a random.Random that
hypothesis seeds. Every request goes through the gateway's ASGI app in process
(tests/support/asgi.py: the app as a server hands it requests, headers as raw bytes),
one app instance for the whole module, so the code that decides status and reason is
the code a real server runs.

Invariants: the status is one the docs name for that endpoint (no 5xx: there is no
overload here and no timeout is reached); a refusal is one line; a 2xx request had no
known field in a wire type protobuf would skip. For requests that are not mutated,
more: a write accounts for every sample (kept + rejected = sent) and keeps the valid
series of a partly bad request, which read back bit for bit at the end; a read gets
exactly the status and the series a brute-force evaluation of its matchers over the
known data predicts.

The run's size is STRATA_FUZZ_REQUESTS (100,000 by default, about a minute on one core);
for a million: docs/ingest.md#hostile-input.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest
import snappy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from blocks.errors import InvalidRequest
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.write import EARLIEST_TIMESTAMP
from proto import remote_pb2, types_pb2
from querier.matchers import MAX_REGEX_BYTES, Matcher, MatchType
from querier.stream_frames import iter_responses
from tests.gateway.writes import SPECIAL_BITS, WRITE_HEADERS, bits_of
from tests.querier.streamed import decode_streamed
from tests.support import mutate, wire
from tests.support.asgi import Answer, InProcessApp

REQUESTS = int(os.environ.get("STRATA_FUZZ_REQUESTS", "100000"))
# Each test's share of the run, and how many requests one hypothesis example sends.
SHARES = {
    "snappy": 0.28,
    "protobuf": 0.22,
    "samples": 0.05,
    "reads": 0.15,
    "read_bytes": 0.20,
    "headers": 0.10,
}
BATCH = {"snappy": 40, "protobuf": 40, "samples": 4, "reads": 6, "read_bytes": 40, "headers": 20}

WRITE_STATUSES = frozenset({204, 400, 413})
READ_STATUSES = frozenset({200, 400, 413, 422})
READ_TENANT = "fuzz-read"
READ_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Read-Version": "0.1.0",
    "X-Scope-OrgID": READ_TENANT,
}
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
NOW_MS = int(time.time() * 1000)
HOUR_MS = 3_600_000
STREAMED = remote_pb2.ReadRequest.STREAMED_XOR_CHUNKS
REJECTED = re.compile(r"rejected (\d+) samples \(.*\), kept (\d+); first: ")

Labels = tuple[tuple[str, str], ...]
Points = dict[int, int]
WriteSeries = tuple[list[tuple[bytes, bytes]], list[tuple[int, int]]]


def share(test: str) -> int:
    """Requests a test sends: the shares add up to at least REQUESTS."""
    return math.ceil(REQUESTS * SHARES[test])


def examples(test: str) -> int:
    """How many hypothesis examples send a test's share."""
    return math.ceil(share(test) / BATCH[test])


def fuzz_settings(test: str) -> settings:
    return settings(
        max_examples=examples(test),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@dataclass(slots=True)
class Sent:
    """Requests a test sent, to show it sent its share."""

    count: int = 0


def check_answer(answer: Answer, allowed: frozenset[int], what: str) -> None:
    """The invariants every answer keeps."""
    assert answer.status in allowed, f"{what}: {answer.status} {answer.text[:300]!r}"
    if answer.status >= 400:
        text = answer.text
        assert text.endswith("\n"), f"{what}: {text[:300]!r}"
        assert "\n" not in text[:-1], f"{what}: {text[:300]!r}"
        assert "internal error" not in text, what


def with_samples_only(raw: bytes) -> bytes:
    """A WriteRequest without its series entries that hold no sample, exemplar or
    histogram: Strata stores nothing of those and by design does not look at their
    labels (docs/ingest.md#hostile-input)."""
    fields = wire.split_fields(raw)
    if fields is None:
        return raw
    kept = []
    for field in fields:
        found = wire.length_delimited_payload(field)
        inner = wire.split_fields(found[1]) if found is not None and found[0] == 1 else None
        if inner is None or any(f[0] >> 3 in (2, 3, 4) for f in inner):
            kept.append(field)
    return b"".join(kept)


def understood(raw: bytes, schema: wire.Schema) -> None:
    """A request that was answered 2xx had every known field in a wire type protobuf
    accepts for it: one with another type would be skipped, its data silently lost."""
    assert wire.fits_schema(raw, schema), f"accepted with a misplaced field: {raw[:200]!r}"


# --- the data reads are checked against -------------------------------------------------

READ_SERIES: dict[Labels, Points] = {}


def _read_seed() -> tuple[dict[Labels, Points], dict[Labels, Points]]:
    """(flushed into blocks, left in the head) for the read tenant."""
    hosts = ("h0", "h1", "h2", "a\nb", "\u00fc", "")
    flushed: dict[Labels, Points] = {}
    head: dict[Labels, Points] = {}
    for i, (name, job, host) in enumerate(
        (n, j, h) for n in ("up", "node_cpu", "we.ird") for j in ("node", "api") for h in hosts
    ):
        pairs = [("__name__", name), ("job", job)] + ([("host", host)] if host else [])
        labels = tuple(sorted(pairs, key=lambda p: p[0].encode()))
        old = {NOW_MS - 3 * HOUR_MS + k * 60_000 + i: bits_of(k * 1.5 + i) for k in range(30)}
        if i % 5 == 0:
            old |= {EARLIEST_TIMESTAMP + i: SPECIAL_BITS[i % len(SPECIAL_BITS)], -1 - i: bits_of(i)}
        flushed[labels] = old
        head[labels] = {NOW_MS - 60_000 + k * 1000 + i: bits_of(-k - i) for k in range(20)}
    return flushed, head


def write_body(series: dict[Labels, Points]) -> bytes:
    raw = wire.write_request(
        [
            wire.time_series(
                [wire.label(n.encode(), v.encode()) for n, v in labels],
                [wire.sample(t, b) for t, b in points.items()],
            )
            for labels, points in series.items()
        ]
    )
    return bytes(snappy.compress(raw))


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessApp]:
    """One gateway for the whole run; the read tenant's data partly in blocks."""
    config = GatewayConfig(
        data_dir=tmp_path_factory.mktemp("fuzz"),
        # Durability is not what is fuzzed; an fsync per request would be most of the run.
        wal_fsync=False,
        max_decompressed_bytes=4 << 20,
        cut_interval_s=3600.0,
    )
    with InProcessApp(create_app(config, CollectorRegistry())) as gateway:
        flushed, head = _read_seed()
        tenant = [(b"x-scope-orgid", READ_TENANT.encode())]
        headers = [(k.lower().encode(), v.encode()) for k, v in WRITE_HEADERS.items()] + tenant
        assert gateway.post("/api/v1/write", write_body(flushed), headers).status == 204
        assert gateway.post("/api/v1/admin/flush", b"").status == 200
        assert gateway.post("/api/v1/write", write_body(head), headers).status == 204
        for labels in flushed:
            READ_SERIES[labels] = flushed[labels] | head[labels]
        yield gateway
        assert gateway.request("GET", "/-/healthy").status == 200
        assert gateway.request("GET", "/-/ready").status == 200


# --- strategies ---------------------------------------------------------------------

texts = st.text(max_size=12)
label_bytes = st.one_of(
    texts.map(str.encode),
    st.sampled_from([b"", b"__name__", b"job", b"le", b"__strata_aggr__", b"\xff", b"\xc0\xaf"]),
    st.binary(max_size=12),
)
timestamps = st.one_of(
    st.integers(NOW_MS - 24 * HOUR_MS, NOW_MS + HOUR_MS),
    st.integers(INT64_MIN, INT64_MAX),
    st.sampled_from(
        [INT64_MIN, EARLIEST_TIMESTAMP - 1, EARLIEST_TIMESTAMP, -1, 0, 1, INT64_MAX, NOW_MS]
    ),
)
value_bits = st.one_of(st.integers(0, (1 << 64) - 1), st.sampled_from(SPECIAL_BITS))
samples = st.lists(st.tuples(timestamps, value_bits), max_size=6)
label_lists = st.lists(st.tuples(label_bytes, label_bytes), max_size=6)
hostile_series = st.tuples(label_lists, samples)
# A metric name and plain labels, so that most generated series are valid.
plain_series = st.tuples(
    st.tuples(st.just(b"__name__"), st.sampled_from([b"up", b"x", b"\xc3\xbc"])).map(lambda p: [p]),
    samples,
).map(lambda s: (s[0] + [(b"job", b"j")], s[1]))
# Mutations are drawn from a random.Random of a drawn seed: drawn up front, never in the
# middle of an example whose first requests were already answered.
seeds = st.integers(0, (1 << 64) - 1)
requests = st.lists(st.one_of(plain_series, hostile_series), max_size=5)


def encode_write(series: Sequence[WriteSeries]) -> bytes:
    """A WriteRequest's protobuf bytes, labels in the order given."""
    return wire.write_request(
        [
            wire.time_series(
                [wire.label(n, v) for n, v in labels], [wire.sample(t, b) for t, b in points]
            )
            for labels, points in series
        ]
    )


def post_write(gateway: InProcessApp, body: bytes, path: str = "/api/v1/write") -> Answer:
    return gateway.post(path, body, WRITE_HEADERS)


# --- writes -------------------------------------------------------------------------


def test_mutated_snappy_blocks_of_writes(fuzz_gateway: InProcessApp) -> None:
    sent = Sent()

    @fuzz_settings("snappy")
    @given(requests, seeds)
    def one(series: list[WriteSeries], seed: int) -> None:
        rng = random.Random(seed)
        block = bytes(snappy.compress(encode_write(series)))
        for i in range(BATCH["snappy"]):
            kind = mutate.BYTE_MUTATIONS if i % 4 else (mutate.rewrite_preamble,)
            body = mutate.mutate(block, rng, kind)
            answer = post_write(fuzz_gateway, body)
            check_answer(answer, WRITE_STATUSES, f"snappy block {body[:64]!r}")
            if answer.status == 204:
                understood(with_samples_only(snappy.decompress(body)), wire.WRITE_REQUEST_SCHEMA)
            sent.count += 1

    one()
    assert sent.count >= share("snappy")


def test_mutated_protobuf_of_writes(fuzz_gateway: InProcessApp) -> None:
    sent = Sent()
    paths = ("/api/v1/write", "/api/v1/push", "/api/v1/receive")

    @fuzz_settings("protobuf")
    @given(requests, seeds)
    def one(series: list[WriteSeries], seed: int) -> None:
        rng = random.Random(seed)
        raw = encode_write(series)
        for i in range(BATCH["protobuf"]):
            kinds = mutate.FIELD_MUTATIONS if i % 2 else mutate.BYTE_MUTATIONS
            if i % 3:
                mutated = mutate.mutate_nested(raw, rng, kinds)
            else:
                mutated = mutate.mutate(raw, rng, kinds)
            answer = post_write(fuzz_gateway, bytes(snappy.compress(mutated)), paths[i % 3])
            check_answer(answer, WRITE_STATUSES, f"protobuf {mutated[:80]!r}")
            if answer.status == 204:
                understood(with_samples_only(mutated), wire.WRITE_REQUEST_SCHEMA)
            sent.count += 1

    one()
    assert sent.count >= share("protobuf")


GOOD_NAME = "fuzz_good"


def good_series(example: int, points: Points) -> WriteSeries:
    labels = [(b"__name__", GOOD_NAME.encode()), (b"example", str(example).encode())]
    return labels, list(points.items())


def test_valid_series_of_partly_bad_writes_are_stored(fuzz_gateway: InProcessApp) -> None:
    """Labels, timestamps and values of any kind beside a valid series: every sample is
    accounted for, and the valid series reads back exactly."""
    sent = Sent()
    stored: dict[Labels, Points] = {}
    numbers = itertools.count()
    good_points = st.dictionaries(
        st.one_of(
            st.integers(NOW_MS - 24 * HOUR_MS, NOW_MS),
            st.integers(EARLIEST_TIMESTAMP, NOW_MS),
            st.sampled_from([EARLIEST_TIMESTAMP, -1, 0, 1]),
        ),
        value_bits,
        min_size=1,
        max_size=5,
    )

    @fuzz_settings("samples")
    @given(requests, good_points, seeds)
    def one(series: list[WriteSeries], points: Points, seed: int) -> None:
        rng = random.Random(seed)
        example = next(numbers)
        labels = (("__name__", GOOD_NAME), ("example", str(example)))
        stored[labels] = points
        request = [*series, good_series(example, points)]
        rng.shuffle(request)
        total = sum(len(points) for _, points in request)
        for i in range(BATCH["samples"]):  # the first time, then resends in any order
            if i:
                rng.shuffle(request)
            body = bytes(snappy.compress(encode_write(request)))
            answer = post_write(fuzz_gateway, body, ("/api/v1/write", "/api/v1/push")[i % 2])
            check_answer(answer, frozenset({204, 400}), f"write {request!r}")
            if answer.status == 400:
                counts = REJECTED.match(answer.text)
                assert counts is not None, answer.text
                rejected, kept = int(counts[1]), int(counts[2])
                assert rejected + kept == total, answer.text
                assert kept >= len(points), answer.text
            sent.count += 1

    one()
    assert sent.count >= share("samples")
    # Read from the head: a flush would cut a block for every 2 h window the generated
    # timestamps touch, thousands of them (test_hostile_input.py reads the int64 edges
    # back from blocks).
    query = remote_pb2.Query(
        start_timestamp_ms=INT64_MIN,
        end_timestamp_ms=INT64_MAX,
        matchers=[types_pb2.LabelMatcher(name="__name__", value=GOOD_NAME)],
    )
    body = snappy.compress(remote_pb2.ReadRequest(queries=[query]).SerializeToString())
    answer = fuzz_gateway.post("/api/v1/read", body, {**READ_HEADERS, "X-Scope-OrgID": "default"})
    assert answer.status == 200, answer.text
    assert samples_of(answer)[0] == stored


# --- reads --------------------------------------------------------------------------

MATCHER_NAMES = ("__name__", "job", "host", "instance", "")
SEED_VALUES = ("up", "node_cpu", "we.ird", "node", "api", "h0", "h1", "h2", "a\nb", "\u00fc", "")
regex_pieces = st.sampled_from(
    [
        ".*",
        ".+",
        "h.",
        "[0-9]",
        "|",
        "(",
        ")",
        "a|b",
        "u.",
        "\\.",
        "(?s).",
        "\\",
        "{2}",
        "[",
        "]",
        "*",
        "^",
        "$",
        "\\pL",
        "n",
        "o",
        "d",
        "e",
        "?",
    ]
)
matcher_values = st.one_of(
    st.sampled_from(SEED_VALUES),
    st.lists(st.one_of(regex_pieces, st.sampled_from(SEED_VALUES)), max_size=5).map("".join),
    st.text(max_size=6),
)
matchers = st.builds(
    lambda kind, name, value: types_pb2.LabelMatcher(type=kind, name=name, value=value),
    st.one_of(st.integers(0, 3), st.integers(0, 3), st.integers(-2, 9)),
    st.one_of(st.sampled_from(MATCHER_NAMES), st.text(max_size=4)),
    matcher_values,
)
range_ends = st.one_of(
    st.integers(NOW_MS - 4 * HOUR_MS, NOW_MS + HOUR_MS),
    st.sampled_from([INT64_MIN, EARLIEST_TIMESTAMP, -1, 0, INT64_MAX]),
    st.integers(INT64_MIN, INT64_MAX),
)
hints = st.one_of(
    st.none(),
    st.builds(
        types_pb2.ReadHints,
        step_ms=st.integers(INT64_MIN, INT64_MAX),
        func=st.sampled_from(["", "rate", "max_over_time", "count_over_time", "nope"]),
        start_ms=st.integers(INT64_MIN, INT64_MAX),
        end_ms=st.integers(INT64_MIN, INT64_MAX),
        range_ms=st.one_of(st.integers(0, 7 * 24 * HOUR_MS), st.integers(INT64_MIN, INT64_MAX)),
    ),
)
queries = st.builds(
    lambda start, end, ms, h: remote_pb2.Query(
        start_timestamp_ms=start, end_timestamp_ms=end, matchers=ms, hints=h
    ),
    range_ends,
    range_ends,
    st.lists(matchers, max_size=3),
    hints,
)
read_requests = st.builds(
    lambda qs, types: remote_pb2.ReadRequest(queries=qs, accepted_response_types=types),
    st.lists(queries, max_size=3),
    st.one_of(st.just([]), st.lists(st.integers(0, 3), max_size=3)),
)


def samples_of(answer: Answer) -> list[dict[Labels, Points]]:
    """A SAMPLES answer: per query, labels -> {timestamp: value bits}."""
    response = remote_pb2.ReadResponse.FromString(snappy.uncompress(answer.body))
    out = []
    for result in response.results:
        series: dict[Labels, Points] = {}
        for ts in result.timeseries:
            labels = tuple((label.name, label.value) for label in ts.labels)
            assert labels not in series, "a series twice in one result"
            stamps = [s.timestamp for s in ts.samples]
            assert stamps == sorted(set(stamps)), "samples out of order or repeated"
            series[labels] = {s.timestamp: bits_of(s.value) for s in ts.samples}
        assert list(series) == sorted(series), "series out of label order"
        out.append(series)
    return out


def predicted(request: remote_pb2.ReadRequest) -> list[dict[Labels, Points]] | None:
    """What the read must answer (None: a 400), evaluated series by series."""
    types = list(request.accepted_response_types)
    if types and not {0, 1} & set(types):
        return None
    answers = []
    for query in request.queries:
        try:
            selected = [Matcher(MatchType(m.type), m.name, m.value) for m in query.matchers]
        except (ValueError, InvalidRequest):
            return None  # an unknown type or a regex that does not compile
        if any(len(m.value.encode()) > MAX_REGEX_BYTES for m in query.matchers):
            return None
        if all(m.matches_empty for m in selected):
            return None
        start, end = query.start_timestamp_ms, query.end_timestamp_ms
        if end < start:
            return None
        result = {}
        for labels, points in READ_SERIES.items():
            if all(m.matches(dict(labels)) for m in selected):
                inside = {t: b for t, b in points.items() if start <= t <= end}
                if inside:
                    result[labels] = inside
        answers.append(result)
    return answers


def test_generated_reads_get_exactly_the_predicted_answer(fuzz_gateway: InProcessApp) -> None:
    sent = Sent()

    @fuzz_settings("reads")
    @given(read_requests)
    def one(request: remote_pb2.ReadRequest) -> None:
        expected = predicted(request)
        spoken = [t for t in request.accepted_response_types if t in (0, STREAMED)]
        streamed = spoken[:1] == [STREAMED]
        body = bytes(snappy.compress(request.SerializeToString()))
        for _ in range(BATCH["reads"]):  # the answer must not change between reads
            answer = fuzz_gateway.post("/api/v1/read", body, READ_HEADERS)
            check_answer(answer, READ_STATUSES, f"read {request}")
            sent.count += 1
            if expected is None:
                assert answer.status == 400, f"{request}: {answer.status} {answer.text}"
                continue
            assert answer.status == 200, f"{request}: {answer.text}"
            if streamed:
                got = decode_streamed(answer.body, len(request.queries))
                assert [{k: dict(v) for k, v in q.items()} for q in got] == expected
            else:
                assert samples_of(answer) == expected, str(request)

    one()
    assert sent.count >= share("reads")


def test_mutated_read_requests(fuzz_gateway: InProcessApp) -> None:
    sent = Sent()

    @fuzz_settings("read_bytes")
    @given(read_requests, seeds)
    def one(request: remote_pb2.ReadRequest, seed: int) -> None:
        rng = random.Random(seed)
        raw = request.SerializeToString()
        for i in range(BATCH["read_bytes"]):
            if i % 4 == 0:
                body = mutate.mutate(bytes(snappy.compress(raw)), rng, mutate.BYTE_MUTATIONS)
            else:
                kinds = mutate.FIELD_MUTATIONS if i % 2 else mutate.BYTE_MUTATIONS
                body = bytes(snappy.compress(mutate.mutate_nested(raw, rng, kinds)))
            answer = fuzz_gateway.post("/api/v1/read", body, READ_HEADERS)
            check_answer(answer, READ_STATUSES, f"read {body[:80]!r}")
            if answer.status == 200:
                understood(snappy.decompress(body), wire.READ_REQUEST_SCHEMA)
                if answer.headers["content-type"].startswith("application/x-protobuf"):
                    samples_of(answer)
                else:
                    for _ in iter_responses(answer.body):
                        pass
            sent.count += 1

    one()
    assert sent.count >= share("read_bytes")


# --- headers ------------------------------------------------------------------------

header_values = st.one_of(
    st.sampled_from(
        [
            b"snappy",
            b"SNAPPY",
            b"gzip",
            b"",
            b"snappy, gzip",
            b"identity",
            b"application/x-protobuf",
            b"application/x-protobuf;proto=prometheus.WriteRequest",
            b"application/x-protobuf;proto=io.prometheus.write.v2.Request",
            b"text/plain",
            b";;=;",
            b"default",
            b"..",
            b"a/b",
            b"\x00",
            b"t" * 151,
        ]
    ),
    st.binary(max_size=24),
)


def test_generated_headers(fuzz_gateway: InProcessApp) -> None:
    sent = Sent()
    valid_write = write_body({(("__name__", "headers"),): {NOW_MS: bits_of(1.0)}})
    valid_read = bytes(
        snappy.compress(
            remote_pb2.ReadRequest(
                queries=[
                    remote_pb2.Query(
                        start_timestamp_ms=NOW_MS - HOUR_MS,
                        end_timestamp_ms=NOW_MS,
                        matchers=[types_pb2.LabelMatcher(name="job", value="node")],
                    )
                ]
            ).SerializeToString()
        )
    )
    names = (
        b"content-encoding",
        b"content-type",
        b"x-scope-orgid",
        b"content-length",
        b"x-prometheus-remote-write-version",
    )

    @fuzz_settings("headers")
    @given(
        st.lists(st.tuples(st.sampled_from(names), header_values), min_size=1, max_size=4),
        seeds,
    )
    def one(changes: list[tuple[bytes, bytes]], seed: int) -> None:
        rng = random.Random(seed)
        for i in range(BATCH["headers"]):
            write = i % 2 == 0
            base = WRITE_HEADERS if write else READ_HEADERS
            headers = {k.lower().encode(): v.encode() for k, v in base.items()}
            for name, value in rng.sample(changes, rng.randrange(1, len(changes) + 1)):
                headers[name] = value
            path, body = ("/api/v1/write", valid_write) if write else ("/api/v1/read", valid_read)
            answer = fuzz_gateway.post(path, body, list(headers.items()))
            allowed = (WRITE_STATUSES if write else READ_STATUSES) | {415}
            check_answer(answer, allowed, f"headers {headers!r}")
            sent.count += 1

    one()
    assert sent.count >= share("headers")
