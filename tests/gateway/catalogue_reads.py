"""The catalogue's remote-read cases, and the data the gateway holds before the table runs.

The seed is written once: part of it flushed into blocks in the bucket, part left in the
head, so reads go through both. What is refused follows docs/remote-read.md: 400 for a
request that can never be answered, 413 for a too large body, 415 for another encoding,
422 naming the limit a query passes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from gateway.write import EARLIEST_TIMESTAMP
from proto import remote_pb2, types_pb2
from tests.gateway.catalogue import (
    HOUR_MS,
    INT64_MAX,
    INT64_MIN,
    MAX_DECOMPRESSED_BYTES,
    MAX_REQUEST_BYTES,
    NOW_MS,
    QUERY_MAX_RANGE_MS,
    QUERY_MAX_SAMPLES,
    QUERY_MAX_SERIES,
    READ_HEADERS,
    READ_PATH,
    WRITE_PATH,
    YEAR_MS,
    Case,
    Labels,
    Points,
    exact,
    expect_samples,
    labels_of,
    matcher,
    raw_headers,
    read_body,
)
from tests.gateway.catalogue_writes import ONE, compressed
from tests.gateway.writes import bits_of
from tests.querier.streamed import decode_streamed
from tests.support import wire
from tests.support.asgi import Answer

RE = types_pb2.LabelMatcher.RE
NRE = types_pb2.LabelMatcher.NRE
STREAMED = remote_pb2.ReadRequest.STREAMED_XOR_CHUNKS
HEADERS = raw_headers(READ_HEADERS)
SEED_HOSTS = 8  # more than QUERY_MAX_SERIES: {job="node"} is over the limit
LONG_VALUE = "a" * 2000
SHORT_VALUE = "aaab"


def host(i: int) -> Labels:
    """The labels of one seed series."""
    return labels_of(name="seed", job="node", host=f"h{i}")


def seed_flushed() -> dict[Labels, Points]:
    """Written first and flushed into blocks: an hour of samples 15 s apart, and samples
    at the earliest accepted timestamp and around the epoch."""
    start = NOW_MS - 2 * HOUR_MS
    series: dict[Labels, Points] = {
        host(i): tuple((start + k * 15_000, bits_of(k + i / 10)) for k in range(240))
        for i in range(SEED_HOSTS)
    }
    series[labels_of(name="edges", case="seed")] = (
        (EARLIEST_TIMESTAMP, ONE),
        (-1, bits_of(-1.0)),
        (0, bits_of(0.5)),
    )
    return series


def seed_head() -> dict[Labels, Points]:
    """Written after the flush, so in the head: recent samples of the same hosts, values
    for the regex cases and one series with more samples than a query may read."""
    start = NOW_MS - 10 * 60_000
    series: dict[Labels, Points] = {
        host(i): tuple((start + k * 15_000, bits_of(1000 + k)) for k in range(40))
        for i in range(SEED_HOSTS)
    }
    series[labels_of(name="regex_target", kind="long", value=LONG_VALUE)] = ((NOW_MS, ONE),)
    series[labels_of(name="regex_target", kind="short", value=SHORT_VALUE)] = ((NOW_MS, ONE),)
    dense = QUERY_MAX_SAMPLES + 10_000
    series[labels_of(name="dense")] = tuple((NOW_MS - dense + k, bits_of(k)) for k in range(dense))
    return series


def seeded(labels: Labels) -> Points:
    """Every seed sample of a series, time-sorted."""
    points = dict(seed_flushed().get(labels, ())) | dict(seed_head().get(labels, ()))
    return tuple(sorted(points.items()))


def read(
    name: str,
    request: bytes,
    status: int,
    reason: str,
    *,
    headers: tuple[tuple[bytes, bytes], ...] = HEADERS,
    limit: str = "",
    check: Callable[[Answer], None] | None = None,
) -> Case:
    """A read case."""
    return Case(name, READ_PATH, request, status, reason, headers, limit=limit, check=check)


def one_query(
    *matchers: types_pb2.LabelMatcher, start: int = NOW_MS - 3 * HOUR_MS, end: int = NOW_MS
) -> bytes:
    """A ReadRequest of one query."""
    return read_body([(start, end, list(matchers))])


def expect_streamed(*expected: Mapping[Labels, Points]) -> Callable[[Answer], None]:
    """A check that a streamed answer holds exactly these series, query by query."""

    def check(answer: Answer) -> None:
        assert answer.headers["content-type"].startswith("application/x-streamed-protobuf")
        decoded = decode_streamed(answer.body, len(expected))
        assert [{k: tuple(v) for k, v in q.items()} for q in decoded] == list(expected)

    return check


def framing_cases() -> list[Case]:
    """Bodies, encodings, content types and tenants of read requests."""
    h1 = exact(host(1))
    utf8_matcher = wire.bytes_field(
        1,
        wire.varint_field(2, NOW_MS)
        + wire.bytes_field(3, wire.bytes_field(2, b"__name__") + wire.bytes_field(3, b"\xff\xfe")),
    )
    return [
        read("empty body", b"", 400, "empty request body"),
        read(
            "snappy declaring 4 GiB",
            b"\x80\x80\x80\x80\x10\x00",
            413,
            "body declares 4294967296 bytes uncompressed",
        ),
        read(
            "zeros compressed up to the limit",
            compressed(bytes(MAX_DECOMPRESSED_BYTES)),
            400,
            "body is not a remote-read ReadRequest",
        ),
        read(
            "body one byte over max_request_bytes",
            bytes(MAX_REQUEST_BYTES + 1),
            413,
            f"over the limit of {MAX_REQUEST_BYTES}",
        ),
        read("snappy cut in half", one_query(*h1)[:12], 400, "invalid snappy block"),
        read(
            "protobuf garbage",
            compressed(b"\xff\xff\xff"),
            400,
            "body is not a remote-read ReadRequest",
        ),
        read(
            "invalid UTF-8 in a matcher value",
            compressed(utf8_matcher),
            400,
            "body is not a remote-read ReadRequest",
        ),
        read(
            "queries sent as a varint",
            compressed(wire.varint_field(1, 3)),
            400,
            "field queries (1) of ReadRequest has wire type 0",
        ),
        read(
            "a matcher's type sent as bytes",
            compressed(
                wire.bytes_field(
                    1,
                    wire.varint_field(2, NOW_MS)
                    + wire.bytes_field(
                        3,
                        wire.bytes_field(1, b"\x00")
                        + wire.bytes_field(2, b"job")
                        + wire.bytes_field(3, b"x"),
                    ),
                )
            ),
            400,
            "field type (1) of LabelMatcher has wire type 2",
        ),
        read(
            "Content-Encoding gzip",
            one_query(*h1),
            415,
            "unsupported Content-Encoding 'gzip': remote read needs snappy",
            headers=raw_headers({**READ_HEADERS, "Content-Encoding": "gzip"}),
        ),
        read(
            "Content-Type text/plain",
            one_query(*h1),
            415,
            "unsupported Content-Type 'text/plain' for remote read",
            headers=raw_headers({**READ_HEADERS, "Content-Type": "text/plain"}),
        ),
        read(
            "no Content-Encoding: snappy is assumed",
            one_query(*h1, start=NOW_MS - 3 * HOUR_MS),
            200,
            "",
            headers=raw_headers({"Content-Type": "application/x-protobuf"}),
            check=expect_samples({host(1): seeded(host(1))}),
        ),
        read(
            "Content-Length '\u00b2', a digit only to Unicode",
            one_query(*h1),
            200,
            "",
            headers=(*HEADERS, (b"content-length", b"\xb2")),
            check=expect_samples({host(1): seeded(host(1))}),
        ),
        read(
            "tenant '..'",
            one_query(*h1),
            400,
            "tenant id",
            headers=raw_headers(READ_HEADERS, x_scope_orgid=b".."),
        ),
        read(
            "tenant with a NUL byte",
            one_query(*h1),
            400,
            "tenant id",
            headers=raw_headers(READ_HEADERS, x_scope_orgid=b"a\x00"),
        ),
        read(
            "tenant of 200 bytes",
            one_query(*h1),
            400,
            "longer than 150 bytes",
            headers=raw_headers(READ_HEADERS, x_scope_orgid=b"t" * 200),
        ),
        read(
            "another tenant sees none of the default tenant's series",
            one_query(*h1, start=NOW_MS - 3 * HOUR_MS),
            200,
            "",
            headers=raw_headers(READ_HEADERS, x_scope_orgid=b"team-a_1.x"),
            check=expect_samples({}),
        ),
        read(
            "a tenant reads its own series",
            one_query(matcher("__name__", "tenants")),
            200,
            "",
            headers=raw_headers(READ_HEADERS, x_scope_orgid=b"team-a_1.x"),
            check=expect_samples({labels_of(name="tenants"): ((NOW_MS, ONE),)}),
        ),
    ]


def range_cases() -> list[Case]:
    """Time ranges at the int64 edges, inverted ranges and the query limits."""
    h1 = exact(host(1))
    edges = labels_of(name="edges", case="seed")
    return [
        read(
            "start after end",
            one_query(*h1, start=10, end=0),
            400,
            "query 0: end 0 is before start 10",
        ),
        read(
            "a range before the epoch",
            one_query(*exact(edges), start=-10, end=-1),
            200,
            "",
            check=expect_samples({edges: ((-1, bits_of(-1.0)),)}),
        ),
        read(
            "a range from -2**63",
            one_query(*exact(edges), start=INT64_MIN, end=INT64_MIN + YEAR_MS),
            200,
            "",
            check=expect_samples({edges: ((EARLIEST_TIMESTAMP, ONE),)}),
        ),
        read(
            "a range up to 2**63 - 1",
            one_query(*h1, start=INT64_MAX - YEAR_MS, end=INT64_MAX),
            200,
            "",
            check=expect_samples({}),
        ),
        read(
            "the whole int64 range",
            one_query(*h1, start=INT64_MIN, end=INT64_MAX),
            422,
            f"over the limit of {QUERY_MAX_RANGE_MS} ms (query_max_range_ms)",
            limit="query_max_range_ms",
        ),
        read(
            "eleven years of one series",
            one_query(*h1, start=NOW_MS - 11 * YEAR_MS),
            422,
            "(query_max_range_ms)",
            limit="query_max_range_ms",
        ),
        read(
            "a year of every series",
            one_query(matcher("__name__", ".+", RE), start=NOW_MS - YEAR_MS),
            422,
            f"series, over the limit of {QUERY_MAX_SERIES} (query_max_series)",
            limit="query_max_series",
        ),
        read(
            "every host of a job",
            one_query(matcher("job", "node")),
            422,
            f"query 0 selects {SEED_HOSTS} series, over the limit of {QUERY_MAX_SERIES}",
            limit="query_max_series",
        ),
        read(
            "more samples than a query may read",
            one_query(matcher("__name__", "dense")),
            422,
            f"over the limit of {QUERY_MAX_SAMPLES} (query_max_samples)",
            limit="query_max_samples",
        ),
        read(
            "1001 queries in one request",
            read_body([(NOW_MS - 3 * HOUR_MS, NOW_MS, h1)] * 1001),
            422,
            "the request has 1001 queries, over the limit of 1000 (query_max_queries)",
            limit="query_max_queries",
        ),
        read(
            "seven one-series queries: over the series limit together",
            read_body(
                [(NOW_MS - 3 * HOUR_MS, NOW_MS, exact(host(i % SEED_HOSTS))) for i in range(7)]
            ),
            422,
            "the request's queries select 7 series together, over the limit of 6",
            limit="query_max_series",
        ),
        read(
            "five one-series queries",
            read_body([(NOW_MS - 3 * HOUR_MS, NOW_MS, exact(host(i))) for i in range(5)]),
            200,
            "",
            check=expect_samples(*({host(i): seeded(host(i))} for i in range(5))),
        ),
        read(
            "a query of nothing for a year",
            one_query(matcher("__name__", "absent"), start=NOW_MS - YEAR_MS),
            200,
            "",
            check=expect_samples({}),
        ),
        read(
            "hints at the int64 edges",
            read_body(
                [(NOW_MS - 3 * HOUR_MS, NOW_MS, h1)],
                hints=types_pb2.ReadHints(
                    step_ms=INT64_MAX,
                    range_ms=INT64_MIN,
                    func="\x00rate",
                    start_ms=INT64_MIN,
                    end_ms=INT64_MAX,
                ),
            ),
            200,
            "",
            check=expect_samples({host(1): seeded(host(1))}),
        ),
    ]


def matcher_cases() -> list[Case]:
    """Regex bombs and regexes RE2 refuses, selectors of everything or nothing."""
    target = matcher("__name__", "regex_target")
    long = labels_of(name="regex_target", kind="long", value=LONG_VALUE)
    short = labels_of(name="regex_target", kind="short", value=SHORT_VALUE)
    alternation = "|".join(f"v{i:04}" for i in range(1500)) + "|" + SHORT_VALUE

    def regex(name: str, pattern: str, status: int, reason: str, **more: object) -> Case:
        return read(name, one_query(target, matcher("value", pattern, RE)), status, reason, **more)  # type: ignore[arg-type]

    return [
        regex(
            "(a+)+b: exponential for a backtracking engine",
            "(a+)+b",
            200,
            "",
            check=expect_samples({short: ((NOW_MS, ONE),)}),
        ),
        regex(
            "(a*)*b|(x+x+)+y",
            "(a*)*b|(x+x+)+y",
            200,
            "",
            check=expect_samples({short: ((NOW_MS, ONE),)}),
        ),
        regex(
            "(.*a.{100}){10} over a 2000-byte value",
            "(.*a.{100}){10}",
            200,
            "",
            check=expect_samples({long: ((NOW_MS, ONE),)}),
        ),
        regex(
            "an alternation of 1501 values (9 KiB)",
            alternation,
            200,
            "",
            check=expect_samples({short: ((NOW_MS, ONE),)}),
        ),
        regex(
            "a regex of 16 KiB and one byte",
            "a" * (16 * 1024 + 1),
            422,
            "has 16385 bytes, over the limit of 16384 (query_max_regex_bytes)",
            limit="query_max_regex_bytes",
        ),
        regex(
            "\\pL{100}: a program over RE2's memory budget", "\\pL{100}", 400, "pattern too large"
        ),
        regex("((a{100}){100}){100}", "((a{100}){100}){100}", 400, "invalid repetition size"),
        regex("an unclosed group", "(unclosed", 400, "missing ): (unclosed"),
        regex("a)|(b: refused as Prometheus refuses it", "a)|(b", 400, "unexpected ): a)|(b"),
        regex(
            "NUL and newline in a regex",
            "aaab|\x00\n",
            200,
            "",
            check=expect_samples({short: ((NOW_MS, ONE),)}),
        ),
        read(
            '{foo=~".*"}: every series',
            one_query(matcher("foo", ".*", RE)),
            400,
            "would select every series",
        ),
        read("no matcher at all", one_query(), 400, "would select every series"),
        read(
            "a label no series has",
            one_query(matcher("nothing", "", NRE)),
            200,
            "",
            check=expect_samples({}),
        ),
        read("an empty label name", one_query(matcher("", "x")), 200, "", check=expect_samples({})),
        read(
            "matcher type 4",
            one_query(target, matcher("x", "y", 4)),
            400,
            "matcher on label 'x' has unknown type 4",
        ),
    ]


def answer_cases() -> list[Case]:
    """Response types, wrong methods and paths."""
    h1 = exact(host(1))
    every = {host(1): seeded(host(1))}
    return [
        read(
            "response type 7 only",
            read_body([(NOW_MS - 3 * HOUR_MS, NOW_MS, h1)], accepted=[7]),
            400,
            "no supported response type in [7]",
        ),
        read(
            "response types 7 then STREAMED_XOR_CHUNKS",
            read_body([(NOW_MS - 3 * HOUR_MS, NOW_MS, h1)], accepted=[7, STREAMED]),
            200,
            "",
            check=expect_streamed(every),
        ),
        read(
            "STREAMED_XOR_CHUNKS of head and blocks",
            read_body([(NOW_MS - 3 * HOUR_MS, NOW_MS, h1)], accepted=[STREAMED]),
            200,
            "",
            check=expect_streamed(every),
        ),
        Case(
            "GET on the read endpoint",
            READ_PATH,
            b"",
            405,
            "Method Not Allowed",
            method="GET",
            counted=False,
        ),
        Case(
            "GET on the write endpoint",
            WRITE_PATH,
            b"",
            405,
            "Method Not Allowed",
            method="GET",
            counted=False,
        ),
        Case(
            "POST to a path that does not exist",
            "/api/v1/../../write",
            b"",
            404,
            "Not Found",
            counted=False,
        ),
    ]


def read_cases() -> list[Case]:
    """Every read case of the catalogue."""
    return framing_cases() + range_cases() + matcher_cases() + answer_cases()
