"""The bad-input catalogue, run against one gateway: every case gets its status and reason.

One app instance (WAL, head, shipper, local bucket) answers the whole table again and
again: RECORDED_PASSES times keeping every answer, then MEASURED_PASSES times keeping
nothing but wrong answers, with memory measured after each. Then: no answer was a 5xx,
every refusal was counted in /metrics (by reason for samples, by status and limit for
requests), memory did not grow, the process still answers, a valid write and read work,
and every acknowledged sample reads back bit for bit after a flush into blocks. Cases:
catalogue_writes.py and catalogue_reads.py; docs/ingest.md#hostile-input.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from tests.gateway.catalogue import (
    DEFAULT_TENANT,
    NOW_MS,
    READ_HEADERS,
    READ_PATH,
    WRITE_HEADERS,
    WRITE_PATH,
    YEAR_MS,
    Case,
    Labels,
    Points,
    catalogue_config,
    exact,
    labels_of,
    read_body,
    samples_answer,
)
from tests.gateway.catalogue_reads import read_cases, seed_flushed, seed_head
from tests.gateway.catalogue_writes import ONE, body, write_cases
from tests.support.asgi import Answer, InProcessApp

RECORDED_PASSES = 2
MEASURED_PASSES = 4
# Memory is compared between the end of the first measured pass and the end of the last:
# the passes before warm what is built once or settles (metric children, the head's
# series, compiled regexes, pymalloc arenas after the 100,000-entry cases).
#
# Python objects alive (sys.getallocatedblocks, after a collection): measured to grow by
# about 150 over three passes of ~400 requests. A leak of three objects a request passes
# the bound.
BLOCK_GROWTH_LIMIT = 1_000
# The resident set, after returning free heap memory to the system: catches what the
# Python heap does not hold (protobuf arenas, RE2, decompression buffers). Measured: up
# to 8 MiB, settling after about ten passes; one leaked 4 MiB decompression buffer per
# bomb case (three of them a pass) would add 36 MiB.
RSS_GROWTH_LIMIT_BYTES = 16 << 20
# Samples read back per request at the end: under query_max_samples and one year long.
READ_BACK_SAMPLES = 20_000

# The reasons of docs/ingest.md's validation table.
INGEST_REASONS = frozenset(
    {
        "missing_metric_name",
        "invalid_label_name",
        "invalid_metric_name",
        "duplicate_label_name",
        "too_many_labels",
        "label_name_too_long",
        "label_value_too_long",
        "reserved_label",
        "invalid_utf8",
        "invalid_labels",
        "too_far_in_future",
        "timestamp_out_of_range",
        "duplicate_timestamp",
        "invalid_histogram",
    }
)

Scrape = Mapping[tuple[str, frozenset[tuple[str, str]]], float]
Acknowledged = dict[str, dict[Labels, dict[int, int]]]


@dataclass(frozen=True, slots=True)
class CatalogueRun:
    """The gateway after the table, and what each pass saw."""

    gateway: InProcessApp
    cases: list[Case]
    answers: list[list[Answer]]  # per recorded pass, per case
    wrong: list[str]  # wrong answers of the measured passes
    scrapes: list[Scrape]  # before the first pass, after each recorded pass, at the end
    rss_bytes: list[int]  # after each measured pass
    blocks: list[int]  # Python objects alive after each measured pass
    acknowledged: Acknowledged  # tenant -> labels -> timestamp -> value bits


def rss_bytes() -> int:
    """The process's resident set size (VmRSS), once free heap memory went back to the
    system (glibc keeps freed memory of large buffers, which makes RSS jump around)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: measured as it is
        ctypes.CDLL(None).malloc_trim(0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def scrape(gateway: InProcessApp) -> Scrape:
    """(sample name, labels) -> value, from the gateway's /metrics page."""
    answer = gateway.request("GET", "/metrics")
    assert answer.status == 200, answer.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def acknowledge(acknowledged: Acknowledged, tenant: str, series: Mapping[Labels, Points]) -> None:
    for labels, points in series.items():
        acknowledged.setdefault(tenant, {}).setdefault(labels, {}).update(points)


def seed(gateway: InProcessApp, acknowledged: Acknowledged) -> None:
    """The data reads find: some in blocks in the bucket, some in the head."""
    for series in seed_flushed().items():
        assert gateway.post(WRITE_PATH, body(series), WRITE_HEADERS).status == 204
    flushed = gateway.post("/api/v1/admin/flush", b"")
    assert flushed.status == 200, flushed.text
    for series in seed_head().items():
        assert gateway.post(WRITE_PATH, body(series), WRITE_HEADERS).status == 204
    acknowledge(acknowledged, DEFAULT_TENANT, seed_flushed())
    acknowledge(acknowledged, DEFAULT_TENANT, seed_head())


def send(gateway: InProcessApp, case: Case) -> Answer:
    return gateway.request(case.method, case.path, case.headers, case.body)


def wrong_answer(case: Case, answer: Answer) -> str | None:
    """What is wrong with a case's answer, if anything."""
    line = answer.text.rstrip("\n")
    if answer.status != case.status or case.reason not in line:
        return f"{case.name}: {answer.status} {line[:300]!r}"
    return None


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CatalogueRun]:
    app = create_app(catalogue_config(tmp_path_factory.mktemp("catalogue")), CollectorRegistry())
    app.state.gateway.head.cut_alarm.arm = lambda *args, **kwargs: None
    cases = write_cases() + read_cases()
    acknowledged: Acknowledged = {}
    with InProcessApp(app) as gateway:
        seed(gateway, acknowledged)
        answers: list[list[Answer]] = []
        scrapes = [scrape(gateway)]
        for _ in range(RECORDED_PASSES):
            answers.append([send(gateway, case) for case in cases])
            scrapes.append(scrape(gateway))
        wrong: list[str] = []
        rss: list[int] = []
        blocks: list[int] = []
        for _ in range(MEASURED_PASSES):
            for case in cases:
                problem = wrong_answer(case, send(gateway, case))
                if problem is not None:
                    wrong.append(problem)
            rss.append(rss_bytes())
            blocks.append(sys.getallocatedblocks())
        scrapes.append(scrape(gateway))
        for case, answer in zip(cases, answers[0], strict=True):
            if answer.status < 300 or answer.status == 400:  # 400: the rest is stored
                for tenant, series in case.stores.items():
                    acknowledge(acknowledged, tenant, series)
        yield CatalogueRun(gateway, cases, answers, wrong, scrapes, rss, blocks, acknowledged)


def test_the_catalogue_has_at_least_60_distinct_cases_of_each_kind() -> None:
    for cases, at_least in ((write_cases(), 60), (read_cases(), 40)):
        assert len({c.name for c in cases}) == len(cases), "case names repeat"
        assert len(cases) >= at_least


def test_every_case_gets_its_status_and_reason_every_time(catalogue: CatalogueRun) -> None:
    wrong = []
    for number, answers in enumerate(catalogue.answers, start=1):
        for case, answer in zip(catalogue.cases, answers, strict=True):
            problem = wrong_answer(case, answer)
            if problem is not None:
                wrong.append(f"pass {number}: {problem}")
    wrong += [f"a measured pass: {problem}" for problem in catalogue.wrong]
    assert wrong == [], "\n".join(wrong)


def test_no_answer_is_a_5xx_or_more_than_one_line(catalogue: CatalogueRun) -> None:
    for answers in catalogue.answers:
        for case, answer in zip(catalogue.cases, answers, strict=True):
            assert answer.status < 500, f"{case.name}: {answer.status} {answer.text[:300]}"
            if answer.status >= 300 or answer.status == 204:
                assert "\n" not in answer.text.rstrip("\n"), case.name
                assert "Traceback" not in answer.text, case.name


def test_accepted_answers_hold_what_was_asked_for(catalogue: CatalogueRun) -> None:
    checked = 0
    for case, answer in zip(catalogue.cases, catalogue.answers[-1], strict=True):
        if case.check is not None and answer.status == case.status:
            case.check(answer)
            checked += 1
    assert checked >= 15


def expected_counts(cases: list[Case]) -> dict[str, Counter[str]]:
    """What one pass of the table adds to each counted metric, by label value."""
    answered = [c for c in cases if c.counted]
    rejected: Counter[str] = Counter()
    for case in answered:
        for reason, samples in case.rejected.items():
            rejected[f"{case.tenant}/{reason}"] += samples
    return {
        "strata_write_requests_total": Counter(
            str(c.status) for c in answered if c.path != READ_PATH
        ),
        "strata_read_requests_total": Counter(
            str(c.status) for c in answered if c.path == READ_PATH
        ),
        "strata_read_refused_total": Counter(c.limit for c in answered if c.limit),
        "strata_samples_rejected_total": rejected,
    }


def counted(before: Scrape, after: Scrape) -> dict[str, Counter[str]]:
    """How much each counted metric grew between two scrapes, by label value."""
    label_of = {
        "strata_write_requests_total": ("code",),
        "strata_read_requests_total": ("status",),
        "strata_read_refused_total": ("limit",),
        "strata_samples_rejected_total": ("tenant", "reason"),
    }
    grown: dict[str, Counter[str]] = {name: Counter() for name in label_of}
    for (name, labels), value in after.items():
        if name in label_of:
            key = "/".join(dict(labels)[label] for label in label_of[name])
            grown[name][key] += int(value - before.get((name, labels), 0.0))
    return {name: +counter for name, counter in grown.items()}


def test_every_refusal_is_counted_in_metrics_each_pass(catalogue: CatalogueRun) -> None:
    one_pass = expected_counts(catalogue.cases)
    # Every reason of docs/ingest.md but the one only label_name_rule=legacy gives.
    reasons = {key.split("/")[1] for key in one_pass["strata_samples_rejected_total"]}
    assert reasons == INGEST_REASONS - {"invalid_metric_name"}
    scrapes = catalogue.scrapes
    for before, after in itertools.pairwise(scrapes[: RECORDED_PASSES + 1]):
        assert counted(before, after) == one_pass
    measured = {
        name: Counter({key: n * MEASURED_PASSES for key, n in counter.items()})
        for name, counter in one_pass.items()
    }
    assert counted(scrapes[RECORDED_PASSES], scrapes[-1]) == measured


def test_memory_does_not_grow_after_the_first_passes(catalogue: CatalogueRun) -> None:
    objects = catalogue.blocks[-1] - catalogue.blocks[0]
    assert objects <= BLOCK_GROWTH_LIMIT, f"Python objects after each pass: {catalogue.blocks}"
    grown = catalogue.rss_bytes[-1] - catalogue.rss_bytes[0]
    shown = ", ".join(f"{b / 2**20:.1f}" for b in catalogue.rss_bytes)
    assert grown <= RSS_GROWTH_LIMIT_BYTES, f"RSS after each pass (MiB): {shown}"


def read_back(gateway: InProcessApp, tenant: str, labels: Labels, points: dict[int, int]) -> Points:
    """Every sample of one series, read in pieces within the query limits."""
    headers = {**READ_HEADERS, "X-Scope-OrgID": tenant}
    timestamps = sorted(points)
    found: list[tuple[int, int]] = []
    start = 0
    while start < len(timestamps):
        end = start
        while (
            end + 1 < len(timestamps)
            and end + 1 - start < READ_BACK_SAMPLES
            and timestamps[end + 1] - timestamps[start] < YEAR_MS
        ):
            end += 1
        query = read_body([(timestamps[start], timestamps[end], exact(labels))])
        answer = gateway.post(READ_PATH, query, headers)
        assert answer.status == 200, f"{labels}: {answer.status} {answer.text[:300]}"
        found.extend(samples_answer(answer)[0].get(labels, ()))
        start = end + 1
    return tuple(found)


def test_the_gateway_stays_up_and_keeps_every_acknowledged_sample(
    catalogue: CatalogueRun,
) -> None:
    gateway = catalogue.gateway
    assert gateway.request("GET", "/-/healthy").status == 200
    assert gateway.request("GET", "/-/ready").status == 200
    after = labels_of(name="after_the_table")
    written = gateway.post(WRITE_PATH, body((after, ((NOW_MS, ONE),))), WRITE_HEADERS)
    assert written.status == 204, written.text
    assert read_back(gateway, DEFAULT_TENANT, after, {NOW_MS: ONE}) == ((NOW_MS, ONE),)
    # Out of the head into blocks: the extreme timestamps go through a cut and the bucket.
    flushed = gateway.post("/api/v1/admin/flush", b"")
    assert flushed.status == 200, flushed.text
    series = 0
    started = time.monotonic()
    for tenant, by_labels in catalogue.acknowledged.items():
        for labels, points in by_labels.items():
            assert read_back(gateway, tenant, labels, points) == tuple(sorted(points.items()))
            series += 1
    assert series >= 25
    assert time.monotonic() - started < 60
