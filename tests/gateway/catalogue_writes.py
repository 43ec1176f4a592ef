"""The catalogue's remote-write cases: framing, headers, tenants, protobuf, labels, time.

What is refused and what is accepted follows docs/ingest.md: a request that can never be
read is refused whole (400, 413 or 415); a request that reads is stored except for the
series and samples the validation table names, and answered 400 naming them.
"""

from __future__ import annotations

import snappy

from gateway.write import EARLIEST_TIMESTAMP
from proto import types_pb2, write_v2_pb2
from tests.gateway.catalogue import (
    DEFAULT_TENANT,
    HOUR_MS,
    INT64_MAX,
    INT64_MIN,
    MAX_DECOMPRESSED_BYTES,
    MAX_REQUEST_BYTES,
    NOW_MS,
    WRITE_HEADERS,
    WRITE_PATH,
    Case,
    Labels,
    Points,
    labels_of,
    raw_headers,
)
from tests.gateway.writes import SPECIAL_BITS, STALE_NAN, time_series, write_request
from tests.support import wire

ONE = 0x3FF0000000000000  # 1.0
TWO = 0x4000000000000000  # 2.0
HEADERS = raw_headers(WRITE_HEADERS)
V2_CONTENT_TYPE = "application/x-protobuf;proto=io.prometheus.write.v2.Request"


def compressed(raw: bytes) -> bytes:
    """A snappy block of `raw`, as a sender compresses it."""
    return bytes(snappy.compress(raw))


def body(*series: tuple[Labels, Points]) -> bytes:
    """A remote-write body of these series (labels in the given order)."""
    return compressed(
        write_request(
            *(time_series(labels, points) for labels, points in series)
        ).SerializeToString()
    )


def wire_body(*series: bytes) -> bytes:
    """A remote-write body of hand-encoded TimeSeries messages."""
    return compressed(wire.write_request(list(series)))


def name_label(name: str) -> bytes:
    """The metric name label, encoded."""
    return wire.label(b"__name__", name.encode())


def accepted(name: str, series: Labels, points: Points) -> Case:
    """A write that is stored whole (204)."""
    return Case(
        name,
        WRITE_PATH,
        body((series, points)),
        204,
        "",
        HEADERS,
        stores={DEFAULT_TENANT: {series: points}},
    )


def refused(name: str, request: bytes, reason: str, code: str, samples: int = 1) -> Case:
    """A write whose only series or samples are refused for `code` (400, nothing kept)."""
    return Case(
        name,
        WRITE_PATH,
        request,
        400,
        f"rejected {samples} samples ({samples} {code}), kept 0; first: {reason}",
        HEADERS,
        rejected={code: samples},
    )


def framing_cases() -> list[Case]:
    """Bodies: empty, bombs, broken snappy, over the size limits, sent to the aliases."""
    valid = body((labels_of(name="framing"), ((NOW_MS, ONE),)))
    raw = write_request(
        time_series(labels_of(name="framing"), ((NOW_MS, ONE),))
    ).SerializeToString()
    cases = [
        Case("empty body", WRITE_PATH, b"", 400, "empty request body", HEADERS),
        Case(
            "snappy declaring 4 GiB in six bytes",
            WRITE_PATH,
            b"\x80\x80\x80\x80\x10\x00",
            413,
            "body declares 4294967296 bytes uncompressed",
            HEADERS,
        ),
        Case(
            "snappy declaring 32 GiB, the longest preamble",
            WRITE_PATH,
            wire.uvarint((1 << 35) - 1) + b"\x00",
            413,
            "declares 34359738367 bytes",
            HEADERS,
        ),
        Case(
            "literal block declaring one byte over the limit",
            WRITE_PATH,
            wire.snappy_literal(b"x", declared=MAX_DECOMPRESSED_BYTES + 1),
            413,
            f"limit is {MAX_DECOMPRESSED_BYTES}",
            HEADERS,
        ),
        Case(
            "zeros compressed 21:1 up to the limit (a bomb that fits)",
            WRITE_PATH,
            compressed(bytes(MAX_DECOMPRESSED_BYTES)),
            400,
            "invalid protobuf WriteRequest",
            HEADERS,
        ),
        Case(
            "zeros compressed 21:1 one byte over the limit",
            WRITE_PATH,
            compressed(bytes(MAX_DECOMPRESSED_BYTES + 1)),
            413,
            f"declares {MAX_DECOMPRESSED_BYTES + 1} bytes uncompressed",
            HEADERS,
        ),
        Case(
            "length preamble that never ends",
            WRITE_PATH,
            b"\xff" * 6,
            400,
            "invalid snappy block: bad length preamble",
            HEADERS,
        ),
        Case(
            "snappy cut in half",
            WRITE_PATH,
            valid[: len(valid) // 2],
            400,
            "invalid snappy block: snappy: corrupt input",
            HEADERS,
        ),
        Case(
            "snappy block declaring more than it holds",
            WRITE_PATH,
            wire.snappy_literal(raw, declared=len(raw) + 10),
            400,
            "invalid snappy block",
            HEADERS,
        ),
        Case(
            "snappy block declaring less than it holds",
            WRITE_PATH,
            wire.snappy_literal(raw, declared=len(raw) - 1),
            400,
            "invalid snappy block",
            HEADERS,
        ),
        Case(
            "snappy copy reaching before the start",
            WRITE_PATH,
            b"\x05\x01\x10",
            400,
            "invalid snappy block: snappy: corrupt input",
            HEADERS,
        ),
        Case(
            "an HTTP request line instead of snappy",
            WRITE_PATH,
            b"GET / HTTP/1.1\r\n\r\n",
            400,
            "invalid snappy block",
            HEADERS,
        ),
        Case(
            "body one byte over max_request_bytes",
            WRITE_PATH,
            bytes(range(256)) * (MAX_REQUEST_BYTES // 256) + b"!",
            413,
            f"over the limit of {MAX_REQUEST_BYTES}",
            HEADERS,
        ),
        Case(
            "Content-Length of a terabyte",
            WRITE_PATH,
            valid,
            413,
            f"body of {10**12} bytes is over the limit of {MAX_REQUEST_BYTES}",
            (*HEADERS, (b"content-length", str(10**12).encode())),
        ),
        Case(
            "Content-Length that is not a number: the body is read as it comes",
            WRITE_PATH,
            valid,
            204,
            "",
            (*HEADERS, (b"content-length", b"abc")),
            stores={DEFAULT_TENANT: {labels_of(name="framing"): ((NOW_MS, ONE),)}},
        ),
        Case(
            "Content-Length '\u00b2', a digit only to Unicode",
            WRITE_PATH,
            valid,
            204,
            "",
            (*HEADERS, (b"content-length", b"\xb2")),
            stores={DEFAULT_TENANT: {labels_of(name="framing"): ((NOW_MS, ONE),)}},
        ),
        Case(
            "bomb sent to /api/v1/push",
            "/api/v1/push",
            b"\x80\x80\x80\x80\x10\x00",
            413,
            "declares 4294967296 bytes",
            HEADERS,
        ),
        Case(
            "garbage sent to /api/v1/receive",
            "/api/v1/receive",
            b"\x05garbage",
            400,
            "invalid snappy block",
            HEADERS,
        ),
    ]
    return cases


def header_cases() -> list[Case]:
    """Content-Encoding, Content-Type and the version header, wrong or missing."""

    def with_headers(**changed: str | None) -> tuple[tuple[bytes, bytes], ...]:
        headers = {**WRITE_HEADERS, **changed}
        return raw_headers({k: v for k, v in headers.items() if v is not None})

    series = labels_of(name="headers", case="plain")
    valid = body((series, ((NOW_MS, ONE),)))
    stored = {DEFAULT_TENANT: {series: ((NOW_MS, ONE),)}}
    return [
        Case(
            "Content-Encoding gzip",
            WRITE_PATH,
            valid,
            415,
            "unsupported Content-Encoding 'gzip': remote write needs snappy",
            with_headers(**{"Content-Encoding": "gzip"}),
        ),
        Case(
            "no Content-Encoding",
            WRITE_PATH,
            valid,
            415,
            "unsupported Content-Encoding '(none)'",
            with_headers(**{"Content-Encoding": None}),
        ),
        Case(
            "Content-Encoding of two codings",
            WRITE_PATH,
            valid,
            415,
            "unsupported Content-Encoding 'snappy, gzip'",
            with_headers(**{"Content-Encoding": "snappy, gzip"}),
        ),
        Case(
            "Content-Type application/json",
            WRITE_PATH,
            valid,
            415,
            "unsupported Content-Type 'application/json'",
            with_headers(**{"Content-Type": "application/json"}),
        ),
        Case(
            "a remote write 1.0 body sent as a 2.0 message",
            WRITE_PATH,
            valid,
            400,
            "reserved for prometheus.WriteRequest bodies",
            with_headers(**{"Content-Type": V2_CONTENT_TYPE}),
        ),
        Case(
            "a message of a remote write version to come",
            WRITE_PATH,
            valid,
            415,
            "unsupported remote write message 'io.prometheus.write.v3.Request'",
            with_headers(
                **{"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v3.Request"}
            ),
        ),
        Case(
            "no Content-Type: protobuf is assumed",
            WRITE_PATH,
            valid,
            204,
            "",
            with_headers(**{"Content-Type": None}),
            stores=stored,
        ),
        Case(
            "no X-Prometheus-Remote-Write-Version: not needed",
            WRITE_PATH,
            valid,
            204,
            "",
            with_headers(**{"X-Prometheus-Remote-Write-Version": None}),
            stores=stored,
        ),
        Case(
            "version header 2.0.0 with a 1.0 message: Content-Type decides",
            WRITE_PATH,
            valid,
            204,
            "",
            with_headers(**{"X-Prometheus-Remote-Write-Version": "2.0.0"}),
            stores=stored,
        ),
        Case(
            "Content-Encoding in capitals between spaces",
            WRITE_PATH,
            valid,
            204,
            "",
            with_headers(**{"Content-Encoding": " SNAPPY "}),
            stores=stored,
        ),
    ]


def tenant_cases() -> list[Case]:
    """X-Scope-OrgID values that must never become a directory or a key prefix."""
    series = labels_of(name="tenants")
    valid = body((series, ((NOW_MS, ONE),)))

    def hostile(name: str, tenant: bytes, reason: str = "tenant id") -> Case:
        return Case(
            f"tenant {name}",
            WRITE_PATH,
            valid,
            400,
            reason,
            raw_headers(WRITE_HEADERS, x_scope_orgid=tenant),
        )

    return [
        hostile("'..'", b".."),
        hostile("'.'", b"."),
        hostile("'a/b'", b"a/b"),
        hostile("'../../etc/passwd'", b"../../etc/passwd"),
        hostile("with a NUL byte", b"a\x00b"),
        hostile("of 200 bytes", b"t" * 200, "tenant id longer than 150 bytes"),
        hostile("in UTF-8 ('é')", "é".encode()),
        hostile("of Japanese text", "日本".encode()),
        hostile("empty", b"", "empty tenant id"),
        hostile("with a backslash", b"a\\b"),
        hostile("percent-encoded '..'", b"%2e%2e"),
        hostile("starting with a dot", b".strata-lock"),
        Case(
            "two X-Scope-OrgID headers",
            WRITE_PATH,
            valid,
            400,
            "X-Scope-OrgID",
            raw_headers(WRITE_HEADERS, x_scope_orgid=b"a", X_Scope_OrgID=b"b"),
        ),
        Case(
            "tenant of 150 safe characters",
            WRITE_PATH,
            valid,
            204,
            "",
            raw_headers(WRITE_HEADERS, x_scope_orgid=b"t" * 150),
            tenant="t" * 150,
            stores={"t" * 150: {series: ((NOW_MS, ONE),)}},
        ),
        Case(
            "tenant 'team-a_1.x'",
            WRITE_PATH,
            valid,
            204,
            "",
            raw_headers(WRITE_HEADERS, x_scope_orgid=b"team-a_1.x"),
            tenant="team-a_1.x",
            stores={"team-a_1.x": {series: ((NOW_MS, ONE),)}},
        ),
    ]


def protobuf_cases() -> list[Case]:
    """Protobuf that does not parse, misplaced and unknown fields, odd but valid requests."""
    ok_series = wire.time_series([name_label("protobuf")], [wire.sample(NOW_MS, ONE)])
    raw = wire.write_request([ok_series])
    protobuf = labels_of(name="protobuf")
    twice = labels_of(name="protobuf", case="twice")
    histogram = types_pb2.TimeSeries(labels=[types_pb2.Label(name="__name__", value="histo")])
    histogram.histograms.append(types_pb2.Histogram(count_int=3, timestamp=NOW_MS))
    histogram.samples.append(types_pb2.Sample(value=1.0, timestamp=NOW_MS))
    # Two buckets' spans, one bucket's delta.
    bad_name = types_pb2.Label(name="__name__", value="bad_histo")
    bad_histogram = types_pb2.TimeSeries(labels=[bad_name])
    bad_histogram.histograms.append(
        types_pb2.Histogram(
            count_int=3,
            timestamp=NOW_MS,
            positive_spans=[types_pb2.BucketSpan(offset=0, length=2)],
            positive_deltas=[3],
        )
    )
    bad_histogram.samples.append(types_pb2.Sample(value=1.0, timestamp=NOW_MS))
    exemplar = types_pb2.TimeSeries(labels=[types_pb2.Label(name="__name__", value="exemplar")])
    exemplar.exemplars.append(types_pb2.Exemplar(value=1.0, timestamp=NOW_MS))
    exemplar.samples.append(types_pb2.Sample(value=1.0, timestamp=NOW_MS))
    nameless = wire.time_series([wire.label(b"job", b"x")], [wire.sample(NOW_MS, ONE)])
    return [
        Case(
            "protobuf garbage",
            WRITE_PATH,
            compressed(b"\xff\xff\xff"),
            400,
            "invalid protobuf WriteRequest",
            HEADERS,
        ),
        Case(
            "protobuf cut short",
            WRITE_PATH,
            compressed(raw[:-3]),
            400,
            "invalid protobuf WriteRequest",
            HEADERS,
        ),
        Case(
            "a group start tag",
            WRITE_PATH,
            compressed(b"\x0b"),
            400,
            "invalid protobuf WriteRequest",
            HEADERS,
        ),
        Case(
            "a length running past the end",
            WRITE_PATH,
            compressed(b"\x0a\x7f\x0a\x00"),
            400,
            "invalid protobuf WriteRequest",
            HEADERS,
        ),
        Case(
            "a varint of eleven bytes",
            WRITE_PATH,
            compressed(b"\x10" + b"\xff" * 10 + b"\x01"),
            400,
            "invalid protobuf WriteRequest",
            HEADERS,
        ),
        Case(
            "timeseries sent as a varint",
            WRITE_PATH,
            compressed(wire.varint_field(1, 5)),
            400,
            "field timeseries (1) of RawWriteRequest has wire type 0",
            HEADERS,
        ),
        Case(
            "a sample value sent as a varint",
            WRITE_PATH,
            wire_body(
                wire.time_series(
                    [name_label("protobuf")],
                    [wire.varint_field(1, 7) + wire.varint_field(2, NOW_MS)],
                )
            ),
            400,
            "field value (1) of RawSample has wire type 0",
            HEADERS,
        ),
        Case(
            "a label sent as a fixed64",
            WRITE_PATH,
            wire_body(ok_series + wire.fixed64_field(1, 7)),
            400,
            "field labels (1) of RawTimeSeries has wire type 1",
            HEADERS,
        ),
        Case(
            "unknown fields (Cortex's source, field 15) are skipped",
            WRITE_PATH,
            compressed(raw + wire.varint_field(2, 1) + wire.bytes_field(15, b"future")),
            204,
            "",
            HEADERS,
            stores={DEFAULT_TENANT: {protobuf: ((NOW_MS, ONE),)}},
        ),
        Case(
            "the same series entry twice",
            WRITE_PATH,
            body((twice, ((NOW_MS, ONE),)), (twice, ((NOW_MS, ONE),))),
            204,
            "",
            HEADERS,
            stores={DEFAULT_TENANT: {twice: ((NOW_MS, ONE),)}},
        ),
        Case(
            "one timestamp with two values in one request",
            WRITE_PATH,
            body((labels_of(name="protobuf", case="two values"), ((NOW_MS, ONE), (NOW_MS, TWO)))),
            400,
            "rejected 1 samples (1 duplicate_timestamp), kept 1",
            HEADERS,
            rejected={"duplicate_timestamp": 1},
            stores={
                DEFAULT_TENANT: {labels_of(name="protobuf", case="two values"): ((NOW_MS, ONE),)}
            },
        ),
        Case(
            "metadata only",
            WRITE_PATH,
            compressed(wire.bytes_field(3, wire.varint_field(1, 1) + wire.bytes_field(2, b"up"))),
            204,
            "",
            HEADERS,
        ),
        Case("an empty WriteRequest", WRITE_PATH, compressed(b""), 204, "", HEADERS),
        Case(
            "a native histogram beside a sample (both kept)",
            WRITE_PATH,
            compressed(write_request(histogram).SerializeToString()),
            204,
            "",
            HEADERS,
            stores={DEFAULT_TENANT: {labels_of(name="histo"): ((NOW_MS, ONE),)}},
        ),
        Case(
            "a native histogram whose spans and buckets disagree (the sample beside it kept)",
            WRITE_PATH,
            compressed(write_request(bad_histogram).SerializeToString()),
            400,
            "1 invalid_histogram",
            HEADERS,
            rejected={"invalid_histogram": 1},
            stores={DEFAULT_TENANT: {labels_of(name="bad_histo"): ((NOW_MS, ONE),)}},
        ),
        Case(
            "an exemplar with its sample",
            WRITE_PATH,
            compressed(write_request(exemplar).SerializeToString()),
            204,
            "",
            HEADERS,
            stores={DEFAULT_TENANT: {labels_of(name="exemplar"): ((NOW_MS, ONE),)}},
        ),
        Case(
            "200,000 empty series entries in 19 KB",
            WRITE_PATH,
            compressed(b"\x0a\x00" * 200_000),
            204,
            "",
            HEADERS,
        ),
        Case(
            "100,000 entries of one nameless series",
            WRITE_PATH,
            compressed(wire.write_request([nameless] * 100_000)),
            400,
            "rejected 100000 samples (100000 missing_metric_name), kept 0",
            HEADERS,
            rejected={"missing_metric_name": 100_000},
        ),
    ]


def label_cases() -> list[Case]:
    """Label sets: invalid UTF-8, empty, duplicate, unsorted, too many, too long, reserved."""

    def one(*labels: bytes) -> bytes:
        return wire_body(wire.time_series(list(labels), [wire.sample(NOW_MS, ONE)]))

    name = name_label("labels")
    many = [wire.label(f"l{i:05}".encode(), b"v") for i in range(10_000)]
    thirty = [wire.label(f"l{i:02}".encode(), b"v") for i in range(30)]
    utf8 = labels_of(name="labels", emoji="\U0001f525", **{"\u00fcber": "nul\x00 and\nnewline"})
    longest = labels_of(name="labels", long="v" * 2048)
    good = labels_of(name="labels", case="good")
    return [
        refused(
            "invalid UTF-8 in a label value",
            one(name, wire.label(b"job", b"\xff\xfe")),
            "label is not valid UTF-8",
            "invalid_utf8",
        ),
        refused(
            "invalid UTF-8 in a label name",
            one(name, wire.label(b"j\xc3", b"x")),
            "label is not valid UTF-8",
            "invalid_utf8",
        ),
        refused(
            "a UTF-16 surrogate encoded as UTF-8",
            one(name, wire.label(b"job", b"\xed\xa0\x80")),
            "label is not valid UTF-8",
            "invalid_utf8",
        ),
        refused(
            "an overlong encoding of '/'",
            one(name, wire.label(b"path", b"\xc0\xaf")),
            "label is not valid UTF-8",
            "invalid_utf8",
        ),
        refused(
            "an empty label name",
            one(name, wire.label(b"", b"x")),
            "empty label name",
            "invalid_label_name",
        ),
        refused(
            "a label name twice",
            one(name, wire.label(b"job", b"a"), wire.label(b"job", b"b")),
            "duplicate label name 'job'",
            "duplicate_label_name",
        ),
        refused(
            "a label twice with one value",
            one(name, wire.label(b"job", b"a"), wire.label(b"job", b"a")),
            "duplicate label name 'job'",
            "duplicate_label_name",
        ),
        refused(
            "no metric name", one(wire.label(b"job", b"x")), "no metric name", "missing_metric_name"
        ),
        refused(
            "an empty metric name",
            one(wire.label(b"__name__", b""), wire.label(b"job", b"x")),
            "no metric name",
            "missing_metric_name",
        ),
        refused("31 labels", one(name, *thirty), "31 labels > limit 30", "too_many_labels"),
        refused("10,001 labels", one(name, *many), "10001 labels > limit 30", "too_many_labels"),
        refused(
            "a label name of 1025 bytes",
            one(name, wire.label(b"n" * 1025, b"x")),
            "label name of 1025 bytes > limit 1024",
            "label_name_too_long",
        ),
        refused(
            "a label value of 2049 bytes",
            one(name, wire.label(b"v", b"x" * 2049)),
            "value of label 'v' has 2049 bytes > limit 2048",
            "label_value_too_long",
        ),
        refused(
            "a value of 683 euro signs (2049 bytes)",
            one(name, wire.label(b"v", "\u20ac".encode() * 683)),
            "value of label 'v' has 2049 bytes > limit 2048",
            "label_value_too_long",
        ),
        refused(
            "Strata's own aggregate label",
            one(name, wire.label(b"__strata_aggr__", b"max")),
            "label name '__strata_aggr__' is reserved",
            "reserved_label",
        ),
        refused(
            "a label's fields in reverse order",
            one(name, wire.bytes_field(2, b"x") + wire.bytes_field(1, b"job")),
            "label is not in canonical protobuf encoding",
            "invalid_labels",
        ),
        refused(
            "a label with an unknown field",
            one(name, wire.label(b"job", b"x") + wire.varint_field(3, 1)),
            "label is not in canonical protobuf encoding",
            "invalid_labels",
        ),
        refused(
            "a label value sent as a varint",
            one(name, wire.bytes_field(1, b"job") + wire.varint_field(2, 1)),
            "label is not in canonical protobuf encoding",
            "invalid_labels",
        ),
        refused(
            "a label name encoded though empty",
            one(name, wire.bytes_field(1, b"") + wire.bytes_field(2, b"x")),
            "label is not in canonical protobuf encoding",
            "invalid_labels",
        ),
        accepted("a value of exactly 2048 bytes", longest, ((NOW_MS, ONE),)),
        Case(
            "labels out of order: the same series sorted",
            WRITE_PATH,
            one(wire.label(b"case", b"good"), name),
            204,
            "",
            HEADERS,
            stores={DEFAULT_TENANT: {good: ((NOW_MS, ONE),)}},
        ),
        Case(
            "a label with an empty value is no label",
            WRITE_PATH,
            one(name, wire.label(b"case", b"good"), wire.label(b"empty", b"")),
            204,
            "",
            HEADERS,
            stores={DEFAULT_TENANT: {good: ((NOW_MS, ONE),)}},
        ),
        accepted("UTF-8 names, NUL and newline in values", utf8, ((NOW_MS, ONE),)),
        Case(
            "one good series beside a bad one: the good one kept",
            WRITE_PATH,
            wire_body(
                wire.time_series(
                    [name, wire.label(b"case", b"kept")],
                    [wire.sample(NOW_MS, ONE), wire.sample(NOW_MS + 1, TWO)],
                ),
                wire.time_series([name, wire.label(b"", b"x")], [wire.sample(NOW_MS, ONE)]),
            ),
            400,
            "rejected 1 samples (1 invalid_label_name), kept 2; first: empty label name",
            HEADERS,
            rejected={"invalid_label_name": 1},
            stores={
                DEFAULT_TENANT: {
                    labels_of(name="labels", case="kept"): ((NOW_MS, ONE), (NOW_MS + 1, TWO))
                }
            },
        ),
    ]


def time_cases() -> list[Case]:
    """Values of every bit pattern and timestamps at the edges of int64 and of the clock."""
    special = labels_of(name="values", case="special")
    points = tuple((NOW_MS - 60_000 + i, bits) for i, bits in enumerate(SPECIAL_BITS))
    edges = labels_of(name="edges", case="epoch")
    epoch = ((-1, ONE), (0, TWO), (1, STALE_NAN))
    earliest = labels_of(name="edges", case="earliest")
    unordered = labels_of(name="values", case="unordered")
    stamped = labels_of(name="values", case="timestamps")

    def at(timestamp: int) -> bytes:
        return body((stamped, ((timestamp, ONE),)))

    return [
        accepted(
            "NaN payloads, the staleness marker, infinities, -0.0, subnormals", special, points
        ),
        refused(
            "timestamp -2**63 (reserved)",
            at(INT64_MIN),
            f"sample timestamp {INT64_MIN} is timestamp out of range",
            "timestamp_out_of_range",
        ),
        refused(
            "timestamp before the first whole 2 h window of int64",
            at(EARLIEST_TIMESTAMP - 1),
            f"sample timestamp {EARLIEST_TIMESTAMP - 1} is timestamp out of range",
            "timestamp_out_of_range",
        ),
        accepted(
            "timestamp at the start of the first whole 2 h window",
            earliest,
            ((EARLIEST_TIMESTAMP, ONE),),
        ),
        refused(
            "timestamp 2**63 - 1",
            at(INT64_MAX),
            f"sample timestamp {INT64_MAX} is too far in future",
            "too_far_in_future",
        ),
        refused(
            "timestamp an hour ahead",
            at(NOW_MS + HOUR_MS),
            f"sample timestamp {NOW_MS + HOUR_MS} is too far in future",
            "too_far_in_future",
        ),
        accepted("timestamps -1, 0 and 1", edges, epoch),
        accepted(
            "samples out of time order",
            unordered,
            ((NOW_MS - 3, ONE), (NOW_MS - 5, TWO), (NOW_MS - 4, STALE_NAN)),
        ),
        Case(
            "another value at a stored timestamp",
            WRITE_PATH,
            body((special, ((points[0][0], ONE),))),
            400,
            f"rejected 1 samples (1 duplicate_timestamp), kept 0; first: sample at {points[0][0]}",
            HEADERS,
            rejected={"duplicate_timestamp": 1},
        ),
    ]


def v2_body(symbols: list[str], *series: write_v2_pb2.TimeSeries) -> bytes:
    """A snappy-compressed remote write 2.0 Request."""
    request = write_v2_pb2.Request(symbols=symbols, timeseries=list(series))
    return compressed(request.SerializeToString())


def v2_cases() -> list[Case]:
    """Remote write 2.0: symbol references out of the table, odd pairs, and a good one."""
    headers = raw_headers({**WRITE_HEADERS, "Content-Type": V2_CONTENT_TYPE})
    symbols = ["", "__name__", "v2_catalogue", "job", "x"]
    sample = write_v2_pb2.Sample(value=1.0, timestamp=NOW_MS)

    def series(refs: list[int], **fields: object) -> write_v2_pb2.TimeSeries:
        return write_v2_pb2.TimeSeries(labels_refs=refs, samples=[sample], **fields)  # type: ignore[arg-type]

    return [
        Case(
            "2.0: a series",
            WRITE_PATH,
            v2_body(symbols, series([1, 2, 3, 4])),
            204,
            "",
            headers,
            stores={DEFAULT_TENANT: {labels_of(name="v2_catalogue", job="x"): ((NOW_MS, ONE),)}},
        ),
        Case(
            "2.0: a label ref past the symbols",
            WRITE_PATH,
            v2_body(symbols, series([1, 2, 3, 5])),
            400,
            "timeseries[0].labels_refs ref 5 is outside the symbols table (5 symbols)",
            headers,
        ),
        Case(
            "2.0: odd labels_refs",
            WRITE_PATH,
            v2_body(symbols, series([1, 2, 3])),
            400,
            "timeseries[0].labels_refs has odd length 3",
            headers,
        ),
        Case(
            "2.0: symbols[0] not empty",
            WRITE_PATH,
            v2_body(["__name__", "v2_catalogue"], series([0, 1])),
            400,
            "symbols[0] must be the empty string",
            headers,
        ),
        Case(
            "2.0: a help_ref past the symbols",
            WRITE_PATH,
            v2_body(
                symbols,
                series(
                    [1, 2], metadata=write_v2_pb2.Metadata(type="METRIC_TYPE_COUNTER", help_ref=99)
                ),
            ),
            400,
            "timeseries[0].metadata.help_ref ref 99 is outside the symbols table",
            headers,
        ),
        Case(
            "2.0: an exemplar label ref past the symbols",
            WRITE_PATH,
            v2_body(
                symbols,
                series([1, 2], exemplars=[write_v2_pb2.Exemplar(labels_refs=[3, 7])]),
            ),
            400,
            "timeseries[0].exemplars[0] ref 7 is outside the symbols table",
            headers,
        ),
    ]


def write_cases() -> list[Case]:
    """Every write case of the catalogue."""
    return (
        framing_cases()
        + header_cases()
        + tenant_cases()
        + protobuf_cases()
        + label_cases()
        + time_cases()
        + v2_cases()
    )
