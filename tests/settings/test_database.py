"""check_database against a real PostgreSQL table: columns, types, safety, read-only."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from pipeline.mapping import FieldSpec, FieldType, Mapping
from pipeline.secret import Secret
from pipeline.settings import DEFAULT_MAPPING, Settings, Severity, SourceSettings, check_database
from tests.settings.conftest import snapshot


def settings_for(dsn: str, *extra: FieldSpec, table: str = "orders") -> Settings:
    mapping = replace(DEFAULT_MAPPING, fields=DEFAULT_MAPPING.fields + extra)
    return Settings(source=SourceSettings(dsn=Secret(dsn), table=table), mapping=mapping)


def test_the_demo_mapping_fits_the_demo_table(legacy_dsn: str) -> None:
    before = snapshot(legacy_dsn)
    assert check_database(settings_for(legacy_dsn)) == []
    assert snapshot(legacy_dsn) == before


@pytest.mark.parametrize(
    ("column", "field_type", "expected"),
    [
        ("customer_name", FieldType.PICKLIST, None),
        ("order_number", FieldType.EMAIL, None),  # varchar
        ("currency", FieldType.TEXT, None),  # char(3)
        ("state", FieldType.PICKLIST, None),  # enum
        ("ref", FieldType.TEXT, None),  # uuid
        ("quantity", FieldType.TEXT, None),  # numbers render as text
        ("small", FieldType.INTEGER, None),
        ("quantity", FieldType.DECIMAL, None),
        ("amount", FieldType.CURRENCY, None),
        ("created_local", FieldType.DATETIME, None),
        ("weight", FieldType.CURRENCY, Severity.WARNING),  # float: allowed, with a warning
        ("legacy_date", FieldType.DATE, Severity.ERROR),  # text into a date field
        ("shipped_at", FieldType.DATE, Severity.ERROR),
        ("order_date", FieldType.DATETIME, Severity.ERROR),
        ("amount", FieldType.INTEGER, Severity.ERROR),
        ("price_money", FieldType.CURRENCY, Severity.ERROR),
        ("customer_name", FieldType.BOOLEAN, Severity.ERROR),
        ("is_gift", FieldType.TEXT, Severity.ERROR),
        ("quantity", FieldType.EMAIL, Severity.ERROR),
        ("extra", FieldType.MULTILINE, Severity.ERROR),  # jsonb
        ("order_date", FieldType.TEXT, Severity.ERROR),
    ],
)
def test_column_type_against_field_type(
    legacy_dsn: str, column: str, field_type: FieldType, expected: Severity | None
) -> None:
    allowed = ("a",) if field_type is FieldType.PICKLIST else ()
    spec = FieldSpec(column, "Probe", field_type, allowed=allowed)
    mapping = Mapping(fields=(DEFAULT_MAPPING.fields[0], spec))
    settings = Settings(source=SourceSettings(dsn=Secret(legacy_dsn)), mapping=mapping)
    problems = check_database(settings)
    if expected is None:
        assert problems == []
    else:
        assert [(p.key, p.severity) for p in problems] == [("mapping[1].type", expected)]
        assert repr(column) in problems[0].message


def test_missing_columns_are_named_with_a_suggestion(legacy_dsn: str) -> None:
    problems = check_database(
        settings_for(
            legacy_dsn,
            FieldSpec("discount", "Discount", FieldType.DECIMAL),
            FieldSpec("customer_mail", "Mail2", FieldType.EMAIL),
        )
    )
    assert [p.key for p in problems] == ["mapping[12].column", "mapping[13].column"]
    assert "did you mean 'customer_email'" in problems[1].message


@pytest.mark.parametrize(
    "table", ['orders"; DROP TABLE orders; --', "orders; DROP TABLE orders", "Orders", "nope"]
)
def test_missing_or_hostile_table_names(legacy_dsn: str, table: str) -> None:
    before = snapshot(legacy_dsn)
    problems = check_database(settings_for(legacy_dsn, table=table))
    assert [p.key for p in problems] == ["source.table"]
    assert "does not exist" in problems[0].message
    assert snapshot(legacy_dsn) == before


def test_sync_columns_not_installed_yet_is_a_warning(legacy_dsn: str) -> None:
    settings = settings_for(legacy_dsn)
    settings = replace(settings, source=replace(settings.source, synced_column="in_zoho"))
    problems = check_database(settings)
    assert [(p.key, p.severity) for p in problems] == [("source.synced_column", Severity.WARNING)]
    assert "ordersync db install" in problems[0].message


def test_missing_schema(legacy_dsn: str) -> None:
    settings = settings_for(legacy_dsn)
    settings = replace(settings, source=replace(settings.source, schema="legacy"))
    assert [p.key for p in check_database(settings)] == ["source.schema"]


def test_unreachable_database_never_shows_the_dsn() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dsn = f"postgresql://postgres:Pw-9f2e@127.0.0.1:{port}/nowhere"
    problems = check_database(settings_for(dsn), connect_timeout=2)
    assert [p.key for p in problems] == ["source.dsn"]
    assert "cannot connect" in problems[0].message
    assert "Pw-9f2e" not in problems[0].message


def test_malformed_dsn_is_not_echoed() -> None:
    problems = check_database(settings_for("host=127.0.0.1 password=Pw-77 dbname"))
    assert [p.key for p in problems] == ["source.dsn"]
    assert "Pw-77" not in problems[0].message
