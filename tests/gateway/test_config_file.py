"""The YAML config file: precedence (flags > STRATA_* > file > defaults), every type of
setting, the compact: section, each mistake named by file, line, key and reason, and
`strata config check` / `strata config defaults`.

Values for "every setting" are built from the settings classes' fields, so a new setting
is covered without touching this file (a new string setting needs a value in
NON_DEFAULT_STRINGS: the test says so).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from compactor.config import CompactorConfig, build_compactor_config, compactor_settings
from gateway.cli import build_parser, inspect_config, main
from gateway.config import ConfigError, GatewayConfig, build_config, env_var, settings
from gateway.config_file import (
    CONFIG_ENV,
    INHERITED_BY_COMPACT,
    ConfigFile,
    ConfigFileError,
    read_config_file,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "strata.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(path: Path) -> list[str]:
    """The lines ConfigFileError lists for a file whose layout is wrong."""
    with pytest.raises(ConfigFileError) as raised:
        read_config_file(path)
    return [p.describe() for p in raised.value.problems]


def gateway_from(path: Path, **env: str) -> GatewayConfig:
    return build_config({}, env, read_config_file(path).serve)


def compactor_from(path: Path, **env: str) -> CompactorConfig:
    return build_compactor_config({}, env, read_config_file(path).compact_values())


# --- every setting, from the fields --------------------------------------------------------

# Settings of type str whose values have a shape of their own (an address, a tenant, a file);
# durations are derived from their default.
NON_DEFAULT_STRINGS: dict[str, str] = {
    "listen": "0.0.0.0:9999",
    "default_tenant": "team-a",
    "auth_file": "/etc/strata/auth.json",
    "tls_cert_file": "/etc/strata/tls.crt",
    "tls_key_file": "/etc/strata/tls.key",
    "label_name_rule": "legacy",
    "bucket_url": "s3://metrics/strata?endpoint=http://127.0.0.1:9000&path_style=true",
    "log_level": "debug",
    "retention_overrides": "",  # replaced by a real file: the compactor reads it at once
    "limits_file": "/etc/strata/limits.json",  # read by the gateway's limits, not the config
    "index_cache_dir": "/var/cache/strata-index",
}


def non_default_text(f: dataclasses.Field[Any], tmp_path: Path) -> str:
    """A valid value other than the default, as its STRATA_* variable would hold it."""
    default = f.default
    if isinstance(default, bool):
        return "false" if default else "true"
    if isinstance(default, int):
        return str(default + 7)
    if isinstance(default, float):
        return str(default + 1.5)
    if isinstance(default, Path):
        return str(tmp_path / "elsewhere")
    if f.name == "retention_overrides":
        overrides = tmp_path / "retention.json"
        overrides.write_text(json.dumps({"team-a": {"retention_raw": "7d"}}))
        return str(overrides)
    if f.name in NON_DEFAULT_STRINGS:
        return NON_DEFAULT_STRINGS[f.name]
    if f.type == "str" and f.name not in NON_DEFAULT_STRINGS:
        try:
            CompactorConfig(**{f.name: "1h"})  # type: ignore[arg-type]
        except (ConfigError, TypeError):
            pytest.fail(f"new string setting {f.name}: add a value to NON_DEFAULT_STRINGS")
        return "1h" if default != "1h" else "2h"
    pytest.fail(f"setting {f.name} has a type this test does not know: {f.type}")


def default_text(f: dataclasses.Field[Any]) -> str:
    """The default as its STRATA_* variable would hold it."""
    return str(f.default).lower() if isinstance(f.default, bool) else str(f.default)


def expected(fields: Sequence[dataclasses.Field[Any]], texts: dict[str, str]) -> dict[str, Any]:
    """The typed values the texts must become."""
    out: dict[str, Any] = {}
    for f in fields:
        default, text = f.default, texts[f.name]
        if isinstance(default, bool):
            out[f.name] = text == "true"
        elif isinstance(default, int | float | Path):
            out[f.name] = type(default)(text)
        else:
            out[f.name] = text
    return out


def every_setting_file(tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, str]]:
    """A config file setting every setting of both sections to a non-default value."""
    serve = {f.name: non_default_text(f, tmp_path) for f in settings()}
    compact = {f.name: non_default_text(f, tmp_path) for f in compactor_settings()}
    compact["listen"] = "0.0.0.0:9998"  # not the gateway's own
    path = write(tmp_path, yaml.safe_dump({**serve, "compact": compact}))
    return path, serve, compact


def test_a_file_setting_every_setting_round_trips_into_both_settings_objects(
    tmp_path: Path,
) -> None:
    path, serve, compact = every_setting_file(tmp_path)
    gateway = gateway_from(path)
    compactor = compactor_from(path)

    assert gateway == GatewayConfig(**expected(settings(), serve))
    assert compactor == CompactorConfig(**expected(compactor_settings(), compact))
    for f in [*settings(), *compactor_settings()]:
        target = gateway if f in settings() else compactor
        assert getattr(target, f.name) != f.default, f"{f.name} kept its default"
    assert compactor.tenant_overrides == {"team-a": {"retention_raw": 7 * 86_400_000}}


def test_every_variable_wins_over_the_file_and_every_flag_over_the_variable(
    tmp_path: Path,
) -> None:
    path, _, _ = every_setting_file(tmp_path)
    loaded = read_config_file(path)
    # Each command's process has its own environment: the names overlap (STRATA_LISTEN).
    serve_env = {env_var(f.name): default_text(f) for f in settings()}
    compact_env = {env_var(f.name): default_text(f) for f in compactor_settings()}
    flags = {"listen": "127.0.0.1:1234", "retention_raw": "1d"}

    assert build_config({}, serve_env, loaded.serve) == GatewayConfig()
    assert build_compactor_config({}, compact_env, loaded.compact_values()) == CompactorConfig()
    assert build_config(flags, serve_env, loaded.serve).listen == "127.0.0.1:1234"
    compact_flags = build_compactor_config(flags, compact_env, loaded.compact_values())
    assert compact_flags.retention_raw == "1d"


def test_a_file_value_wins_over_the_default_and_loses_to_a_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "head_max_bytes: 1_000\nlisten: 0.0.0.0:9300\n")

    assert gateway_from(path).head_max_bytes == 1000
    assert gateway_from(path).listen == "0.0.0.0:9300"
    assert gateway_from(path, STRATA_HEAD_MAX_BYTES="2000").head_max_bytes == 2000
    assert gateway_from(path).max_request_bytes == GatewayConfig().max_request_bytes


# --- types --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "setting", "value"),
    [
        ("wal_fsync: false", "wal_fsync", False),
        ("wal_fsync: off", "wal_fsync", False),
        ("auth_metrics: yes", "auth_metrics", True),
        ('auth_metrics: "1"', "auth_metrics", True),
        ("head_max_bytes: 268_435_456", "head_max_bytes", 268_435_456),
        ('head_max_bytes: "4096"', "head_max_bytes", 4096),
        ("query_timeout_s: 30", "query_timeout_s", 30.0),
        ("query_timeout_s: 1e3", "query_timeout_s", 1000.0),
        ("query_timeout_s: 2.5", "query_timeout_s", 2.5),
        ("data_dir: /var/lib/strata", "data_dir", Path("/var/lib/strata")),
        ("default_tenant: 42", "default_tenant", "42"),
        ("default_tenant: no", "default_tenant", "no"),
        ("bucket_url: ''", "bucket_url", ""),
        ("bucket_url: file:///srv/bucket", "bucket_url", "file:///srv/bucket"),
        ("listen: '[::1]:9201'", "listen", "[::1]:9201"),
    ],
)
def test_each_type_of_gateway_setting_is_read_from_yaml(
    tmp_path: Path, line: str, setting: str, value: object
) -> None:
    config = gateway_from(write(tmp_path, line + "\n"))
    assert getattr(config, setting) == value
    assert type(getattr(config, setting)) is type(value)


@pytest.mark.parametrize(
    ("line", "setting", "value"),
    [
        ("retention_1h: 0", "retention_1h", "0"),
        ("retention_raw: 1h30m", "retention_raw", "1h30m"),
        ('delete_delay: "2d"', "delete_delay", "2d"),
        ("downsampling: false", "downsampling", False),
        ("listen: 0.0.0.0:9302", "listen", "0.0.0.0:9302"),
    ],
)
def test_each_type_of_compactor_setting_is_read_from_its_section(
    tmp_path: Path, line: str, setting: str, value: object
) -> None:
    config = compactor_from(write(tmp_path, f"compact:\n  {line}\n"))
    assert getattr(config, setting) == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_request_bytes: lots\n", ":1: max_request_bytes: must be a whole number (got 'lots')"),
        ("max_request_bytes: 1.5\n", ":1: max_request_bytes: must be a whole number"),
        ("query_timeout_s: soon\n", ":1: query_timeout_s: must be a number (got 'soon')"),
        ("wal_fsync: maybe\n", ":1: wal_fsync: must be true or false (got 'maybe')"),
        ("\nlog_level: verbose\n", ":2: log_level: must be debug, info, warning or error"),
        ("listen: nowhere\n", ":1: listen: must be HOST:PORT (got 'nowhere')"),
        ("head_max_bytes: 0\n", ":1: head_max_bytes: must be positive (got 0)"),
        ("default_tenant: ../x\n", ":1: default_tenant: invalid tenant id"),
    ],
)
def test_a_bad_gateway_value_names_file_line_key_and_reason(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        gateway_from(path)
    assert str(raised.value).startswith(str(path) + expected.split(" (got")[0])
    assert expected in str(raised.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "compact:\n  retention_raw: ten days\n",
            ":2: compact.retention_raw: must be a duration such as 30d",
        ),
        ("compact:\n  interval: 5\n", ":2: compact.interval: must be a duration"),
        ("compact:\n  lease_ttl: 0\n", ":2: compact.lease_ttl: must be positive"),
        # Inherited from the top level: named where it is written.
        ("log_level: loud\ncompact: {}\n", ":1: log_level: must be debug, info, warning or error"),
    ],
)
def test_a_bad_compactor_value_names_file_line_key_and_reason(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        compactor_from(path)
    assert str(raised.value).startswith(str(path) + expected)


def test_a_bad_overrides_file_named_in_the_section_is_located_at_its_key(tmp_path: Path) -> None:
    overrides = write(tmp_path, '{"t": {"retention_raw": "soon"}}', "retention.json")
    path = write(tmp_path, f"compact:\n  interval: 1m\n  retention_overrides: {overrides}\n")
    with pytest.raises(ConfigError) as raised:
        compactor_from(path)
    assert str(raised.value).startswith(f"{path}:3: compact.retention_overrides[t].retention_raw:")


def test_a_flag_or_variable_replacing_a_bad_file_value_is_not_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "listen: nowhere\n")
    assert gateway_from(path, STRATA_LISTEN="127.0.0.1:9").listen == "127.0.0.1:9"
    assert build_config({"listen": "127.0.0.1:8"}, {}, read_config_file(path).serve)


def test_a_bad_variable_is_still_reported_as_a_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "listen: 0.0.0.0:9201\n")
    with pytest.raises(ConfigError) as raised:
        gateway_from(path, STRATA_LISTEN="nowhere")
    assert str(raised.value) == "invalid setting listen='nowhere': must be HOST:PORT"


# --- layout -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lisen: 0.0.0.0:9201\n", ":1: lisen: unknown setting; did you mean listen?"),
        ("x: 1\nbogus_thing: 2\n", ":2: bogus_thing: unknown setting"),
        (
            "retention_raw: 7d\n",
            ":1: retention_raw: unknown setting; it is a setting of strata compact: "
            "put it under compact:",
        ),
        (
            "compact:\n  wal_fsync: true\n",
            ":2: compact.wal_fsync: unknown setting; it is a setting of strata serve",
        ),
        ("compact:\n  retention_rwa: 7d\n", ":2: compact.retention_rwa: unknown setting; did you"),
        ("listen: a:1\nlisten: b:2\n", ":2: listen: set twice (first on line 1)"),
        ("wal_fsync: [true]\n", ":1: wal_fsync: must be a single value, not a list"),
        ("listen: {host: x}\n", ":1: listen: must be a single value, not a mapping"),
        ("bucket_url:\n", ":1: bucket_url: has no value"),
        ("compact: [1]\n", ":1: compact: must be a mapping of compactor settings"),
        ("- data_dir: x\n", ":1: must be a mapping of setting names to values"),
        ("data_dir: [\n", ":2: not valid YAML"),
    ],
)
def test_a_layout_mistake_names_file_line_key_and_reason(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    problems = problems_of(path)
    assert any(p.startswith(str(path) + expected) for p in problems), problems


def test_every_layout_mistake_is_listed_in_line_order(tmp_path: Path) -> None:
    path = write(tmp_path, "lisen: x\ndata_dir: d\ncompact:\n  wal_fsync: 1\nbogus: 2\n")
    problems = problems_of(path)
    assert [p.split(":")[1] for p in problems] == ["1", "4", "5"]
    with pytest.raises(ConfigFileError) as raised:
        read_config_file(path)
    assert str(raised.value).splitlines()[0] == "3 problems in the config file:"


def test_an_empty_file_and_an_empty_section_mean_every_default(tmp_path: Path) -> None:
    assert gateway_from(write(tmp_path, "")) == GatewayConfig()
    assert compactor_from(write(tmp_path, "# nothing\ncompact:\n")) == CompactorConfig()


def test_yaml_tags_construct_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, "data_dir: !!python/object/apply:os.getcwd []\n")
    assert problems_of(path) == [f"{path}:1: data_dir: must be a single value, not a list"]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert problems_of(path) == [f"{path}: cannot read: No such file or directory"]


# --- the compact: section -----------------------------------------------------------------


def test_compact_takes_the_bucket_from_the_top_level_unless_it_sets_its_own(
    tmp_path: Path,
) -> None:
    shared = write(tmp_path, "data_dir: /srv/a\nbucket_url: file:///srv/b\nlog_level: debug\n")
    own = write(tmp_path, "data_dir: /srv/a\ncompact:\n  data_dir: /srv/c\n", "own.yaml")

    inherited = compactor_from(shared)
    assert (inherited.data_dir, inherited.bucket_url, inherited.log_level) == (
        Path("/srv/a"),
        "file:///srv/b",
        "debug",
    )
    assert compactor_from(own).data_dir == Path("/srv/c")
    assert set(INHERITED_BY_COMPACT) <= {f.name for f in compactor_settings()}


def test_compact_does_not_take_the_gateways_listen(tmp_path: Path) -> None:
    path = write(tmp_path, "listen: 0.0.0.0:9201\n")
    assert compactor_from(path).listen == CompactorConfig().listen


# --- through the command line -------------------------------------------------------------


def test_inspect_reads_the_file_named_by_config_or_strata_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "data_dir: /from/file\nwal_fsync: not-a-bool\n")
    monkeypatch.delenv(env_var("data_dir"), raising=False)
    monkeypatch.delenv(CONFIG_ENV, raising=False)

    args = build_parser().parse_args(["inspect", "blocks", "--config", str(path)])
    assert inspect_config(args).data_dir == Path("/from/file")
    monkeypatch.setenv(CONFIG_ENV, str(path))
    args = build_parser().parse_args(["inspect", "blocks"])
    assert inspect_config(args).data_dir == Path("/from/file")
    args = build_parser().parse_args(["inspect", "blocks", "--data-dir", "/from/flag"])
    assert inspect_config(args).data_dir == Path("/from/flag")


def test_inspect_uses_the_files_bucket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("data_dir", "bucket_url"):
        monkeypatch.delenv(env_var(name), raising=False)
    missing = tmp_path / "no-bucket-here"
    path = write(tmp_path, f"bucket_url: file://{missing}\n")

    assert main(["inspect", "blocks", "--config", str(path)]) == 1
    assert str(missing) in capsys.readouterr().err


@pytest.mark.parametrize("command", ["serve", "query", "compact"])
def test_a_command_refuses_a_bad_file_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    # log_level is read by all three (compact takes the top level's).
    path = write(tmp_path, "log_level: loud\n")
    assert main([command, "--config", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"strata: {path}:1: log_level: must be debug, info, warning or error (got 'loud')\n"
    )


def test_compact_refuses_its_sections_bad_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "compact:\n  listen: nowhere\n")
    assert main(["compact", "--config", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"strata: {path}:2: compact.listen: must be HOST:PORT (got 'nowhere')\n"
    )


def test_every_command_with_settings_takes_config() -> None:
    parser = build_parser()
    for argv in (["serve"], ["query"], ["compact"], ["inspect", "blocks"]):
        args = parser.parse_args([*argv, "--config", "x.yaml"])
        assert args.config == "x.yaml"


# --- strata config check / defaults -------------------------------------------------------


def test_config_check_says_ok_and_lists_what_differs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        "listen: 0.0.0.0:9201\ndata_dir: /srv/strata\nhead_max_bytes: 1_000\n"
        "compact:\n  retention_raw: 90d\n",
    )
    assert main(["config", "check", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: ok (5 settings differ from the defaults)",
        "  data_dir: /srv/strata",
        "  listen: 0.0.0.0:9201",
        "  head_max_bytes: 1000",
        "  compact.data_dir: /srv/strata (the top level's)",
        "  compact.retention_raw: 90d",
    ]


def test_config_check_of_a_file_of_defaults_is_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "defaults"]) == 0
    path = write(tmp_path, capsys.readouterr().out)
    assert main(["config", "check", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok (every setting at its default)\n"


def test_config_check_lists_every_problem_by_line_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        "max_request_bytes: lots\n"
        "log_level: verbose\n"
        "lisen: x\n"
        "tls_cert_file: cert.pem\n"
        "compact:\n"
        "  retention_raw: ten days\n"
        "  wal_fsync: true\n",
    )
    assert main(["config", "check", str(path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{path}:1: max_request_bytes: must be a whole number (got 'lots')",
        f"{path}:2: log_level: must be debug, info, warning or error (got 'verbose')",
        f"{path}:3: lisen: unknown setting; did you mean listen?",
        f"{path}:6: compact.retention_raw: must be a duration such as 30d, 40h, 1h30m or 0 "
        "(got 'ten days')",
        f"{path}:7: compact.wal_fsync: unknown setting; it is a setting of strata serve: "
        "put it at the top level",
        f"{path}: tls_key_file: tls_cert_file and tls_key_file are set together (got '')",
    ]


def test_config_check_loads_the_files_the_settings_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    auth = write(tmp_path, "{not json", "auth.json")
    path = write(
        tmp_path,
        f"tls_cert_file: {tmp_path}/c.pem\ntls_key_file: {tmp_path}/k.pem\nauth_file: {auth}\n"
        f"compact:\n  retention_overrides: {tmp_path}/absent.json\n",
    )
    assert main(["config", "check", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0:2] for line in lines] == [
        [f"{path}:1", "tls_cert_file"],
        [f"{path}:3", "auth_file"],
        [f"{path}:5", "compact.retention_overrides"],
    ]
    assert "no such file" in lines[0]
    assert "not JSON" in lines[1]


def test_config_check_of_a_missing_file_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", "check", str(tmp_path / "absent.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().out


def test_config_check_without_a_file_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "config", "check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 2
    assert "FILE" in result.stderr


def test_config_defaults_sets_every_setting_to_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["config", "defaults"]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    compact = doc.pop("compact")
    assert set(doc) == {f.name for f in settings()}
    assert set(compact) == {f.name for f in compactor_settings()} - set(INHERITED_BY_COMPACT)


def test_config_defaults_round_trips_to_the_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["config", "defaults"])
    path = write(tmp_path, capsys.readouterr().out)
    loaded: ConfigFile = read_config_file(path)
    assert build_config({}, {}, loaded.serve) == GatewayConfig()
    assert build_compactor_config({}, {}, loaded.compact_values()) == CompactorConfig()
