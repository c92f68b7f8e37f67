"""The one serialiser: CSV (COPY → csv → json_value) equals the JSON path, on PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg2 import sql

from pipeline.mapping import FieldSpec, FieldType, Mapping
from pipeline.serialize import (
    dumps,
    json_record,
    json_value,
    select_list,
    session_timezone_sql,
)
from tests.fixtures.db import scratch_connection

TZ = "Asia/Kolkata"
MAPPING = Mapping(
    key_column="id",
    unique_field="parent_id",
    fields=(
        FieldSpec("id", "parent_id", FieldType.TEXT),
        FieldSpec("name", "Name", FieldType.TEXT),
        FieldSpec("notes", "Notes", FieldType.MULTILINE),
        FieldSpec("qty", "Quantity", FieldType.INTEGER),
        FieldSpec("amount", "Amount", FieldType.CURRENCY),
        FieldSpec("ratio", "Ratio", FieldType.DECIMAL),
        FieldSpec("day", "Day", FieldType.DATE),
        FieldSpec("at", "At", FieldType.DATETIME),
        FieldSpec("flag", "Flag", FieldType.BOOLEAN),
    ),
)
DDL = """CREATE TABLE t (id bigint PRIMARY KEY, name text, notes text, qty integer,
         amount numeric(12, 2), ratio numeric, day date, at timestamptz, flag boolean)"""

text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)
rows = st.lists(
    st.tuples(
        st.none() | text,
        st.none() | text | st.sampled_from(["a,b", 'say "hi"', "two\nlines", "cr\r\nlf", " "]),
        st.none() | st.integers(-(2**31), 2**31 - 1),
        st.none() | st.decimals(-(10**9), 10**9, places=2, allow_nan=False),
        st.none() | st.decimals(-(10**6), 10**6, places=9, allow_nan=False),
        st.none() | st.dates(date(1000, 1, 1), date(9999, 12, 31)),
        st.none()
        | st.datetimes(datetime(1971, 1, 1), datetime(2090, 1, 1), timezones=st.just(UTC)),
        st.none() | st.booleans(),
    ),
    min_size=1,
    max_size=25,
)


@pytest.fixture(scope="module")
def conn() -> Iterator[psycopg2.extensions.connection]:
    with scratch_connection("ordersync_ser", DDL) as connection:
        yield connection


def expected(values: tuple[object, ...]) -> dict[str, object]:
    """What each value must become, computed in Python from the inputs."""
    name, notes, qty, amount, ratio, day, at, flag = values
    out: dict[str, object] = {}
    out["Name"] = name or None
    out["Notes"] = notes or None
    out["Quantity"] = qty
    out["Amount"] = amount
    out["Ratio"] = ratio
    out["Day"] = None if day is None else day.isoformat()  # type: ignore[attr-defined]
    out["At"] = (
        None if at is None else at.astimezone(ZoneInfo(TZ)).replace(microsecond=0).isoformat()  # type: ignore[attr-defined]
    )
    out["Flag"] = flag
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows)
def test_csv_and_json_paths_agree(conn: psycopg2.extensions.connection, data: list) -> None:
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE t")
        cur.executemany(
            "INSERT INTO t VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(i, *values) for i, values in enumerate(data)],
        )
        cur.execute(session_timezone_sql(TZ))
        query = sql.SQL("SELECT {} FROM t ORDER BY id").format(select_list(MAPPING))
        out = io.BytesIO()
        cur.copy_expert(
            sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER false)")
            .format(query)
            .as_string(conn),
            out,
        )
        cur.execute(query)
        texts = cur.fetchall()
    parsed = list(csv.reader(io.StringIO(out.getvalue().decode("utf-8"), newline="")))
    assert len(parsed) == len(data)
    for cells, row_texts, values in zip(parsed, texts, data, strict=True):
        from_csv = {
            spec.api_name: json_value(spec, cell)
            for spec, cell in zip(MAPPING.fields, cells, strict=True)
        }
        from_json = json_record(MAPPING, row_texts)
        assert from_csv == from_json
        want = expected(values)
        assert {k: from_json[k] for k in want} == want
        # what goes on the wire parses back to the same values, decimals exactly
        assert json.loads(dumps(from_json), parse_float=Decimal) == from_json


def test_json_value_types() -> None:
    specs = {spec.column: spec for spec in MAPPING.fields}
    assert json_value(specs["qty"], "-42") == -42
    assert json_value(specs["amount"], "1234.50") == Decimal("1234.50")
    assert str(json_value(specs["amount"], "1234.50")) == "1234.50"
    assert json_value(specs["flag"], "false") is False
    assert json_value(specs["name"], "") is None
    assert json_value(specs["name"], None) is None
    with pytest.raises(ValueError):
        json_value(specs["amount"], "NaN")
    with pytest.raises(ValueError):
        json_value(specs["flag"], "yes")


def test_dumps_writes_decimals_exactly() -> None:
    body = dumps(
        {
            "Amount": Decimal("0.10"),
            "Tiny": Decimal("0.0000001"),
            "Big": Decimal("12345678901234.99"),
            "Flag": True,
            "None": None,
            "T": 'é"\n',
        }
    )
    assert (
        body == '{"Amount":0.10,"Tiny":0.0000001,"Big":12345678901234.99,'
        '"Flag":true,"None":null,"T":"é\\"\\n"}'
    )
    assert json.loads(body, parse_float=Decimal)["Big"] == Decimal("12345678901234.99")


def test_ignore_empty_omits_null_keys() -> None:
    texts = ("1", None, "", None, None, None, None, None, "true")
    assert json_record(MAPPING, texts) == {
        "parent_id": "1",
        "Name": None,
        "Notes": None,
        "Quantity": None,
        "Amount": None,
        "Ratio": None,
        "Day": None,
        "At": None,
        "Flag": True,
    }
    assert json_record(MAPPING, texts, ignore_empty=True) == {"parent_id": "1", "Flag": True}
