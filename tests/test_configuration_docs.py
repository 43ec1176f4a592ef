"""docs/configuration.md documents every setting: its key, flag, variable and true default,
and its generated tables are what the settings classes say today."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from compactor.config import compactor_settings
from gateway.config import env_var, parse_value, settings
from gateway.config_file import COMPACT_SECTION
from gateway.config_reference import reference_rows, replace_reference

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "configuration.md"

EVERY_SETTING = [("", f) for f in settings()] + [
    (COMPACT_SECTION + ".", f) for f in compactor_settings()
]


def documented_rows() -> dict[str, list[str]]:
    """The reference's rows by their key cell (`compact.retention_raw`)."""
    return {row[0].strip("`"): row for row in reference_rows(PAGE.read_text())}


def documented_default(cell: str) -> str:
    """The text of the first code span of a default cell, as YAML reads it back."""
    literal = cell.split("`")[1]
    node = yaml.compose(f"key: {literal}", Loader=yaml.SafeLoader)
    assert isinstance(node, yaml.MappingNode)
    text: str = node.value[0][1].value
    return text


@pytest.mark.parametrize(
    ("prefix", "field"), EVERY_SETTING, ids=[p + f.name for p, f in EVERY_SETTING]
)
def test_every_setting_is_documented_with_its_flag_variable_and_default(
    prefix: str, field: dataclasses.Field[Any]
) -> None:
    row = documented_rows().get(prefix + field.name)
    assert row is not None, f"{prefix}{field.name} is not in docs/configuration.md"
    flag = "--" + field.name.replace("_", "-")
    assert row[1] == f"`{flag}` `{env_var(field.name)}`"
    default = parse_value(field.name, documented_default(row[3]), field.default)
    assert default == field.default, f"{prefix}{field.name}: documented default {row[3]}"
    assert row[4].startswith(str(field.metadata["help"]).split(";")[0])


def test_the_page_documents_no_setting_that_does_not_exist() -> None:
    known = {prefix + f.name for prefix, f in EVERY_SETTING}
    rows = documented_rows()
    settings_rows = {key for key, row in rows.items() if len(row) >= 5 and row[0] != "key"}
    assert settings_rows - known == set()


def test_the_reference_tables_are_regenerated() -> None:
    text = PAGE.read_text()
    assert replace_reference(text) == text, (
        "docs/configuration.md is stale: run python -m gateway.config_reference "
        "docs/configuration.md"
    )


def test_the_readme_links_the_configuration_page() -> None:
    readme = (REPO / "README.md").read_text()
    assert "(docs/configuration.md)" in readme
    assert "--config" in readme
