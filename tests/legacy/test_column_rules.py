"""The field rules by column type: the same rows as the canonical-text tests, for less work.

``pipeline.validate.column_predicate`` rewrites or drops a rule where the column's type settles
it; here every rewrite is held to the canonical test (``Check.predicate`` over the serialiser's
text) row by row, on PostgreSQL, at the edges of each type.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import cycle, islice

import psycopg2
import pytest
from psycopg2 import sql

from pipeline.legacy.names import ColumnInfo
from pipeline.mapping import FieldSpec, FieldType
from pipeline.serialize import text_expression
from pipeline.validate import Rule, checks_for, column_predicate
from tests.fixtures.db import scratch_connection

DDL = """CREATE TABLE public.typed (
    id serial PRIMARY KEY, i2 smallint, i4 integer, i8 bigint NOT NULL, i8n bigint,
    n122 numeric(12, 2), n202 numeric(20, 2), nneg numeric(3, -2), nfree numeric,
    v10 varchar(10), v300 varchar(300), c5 char(5), txt text)"""

VALUES: dict[str, list[str | None]] = {
    "i2": ["32767", "-32768", "0", None],
    "i4": ["999999999", "1000000000", "-999999999", "-1000000000", "2147483647", "-2147483648",
           "0", None],
    "i8": ["9223372036854775807", "-9223372036854775808", "99999", "100000", "1"],
    "i8n": ["9999999999999999", "10000000000000000", "-10000000000000000",
            "-9999999999999999", "999999999", "1000000000", "99999", "100000", None],
    "n122": ["9999999999.99", "-9999999999.99", "0", "0.5", None],
    "n202": ["9999999999999999.99", "10000000000000000.00", "-99999999999999999.99", None],
    "nneg": ["99900", "-99900", "0", None],
    "nfree": ["99999999999999999", "9999999999999999.5", "-10000000000000000", "0.25", None],
    "v10": ["", "abcdefghij", "a", None],
    "v300": ["x" * 255, "x" * 256, "", None],
    "c5": ["ab", "abcde", "", None],
    "txt": ["", "x", None],
}

SPECS = [
    FieldSpec("i8", "parent_id", FieldType.TEXT, mandatory=True),
    FieldSpec("i8n", "Big_Text", FieldType.TEXT, max_length=5, mandatory=True),
    FieldSpec("i8n", "Big_Text_Wide", FieldType.TEXT, max_length=20),
    FieldSpec("i4", "Quantity", FieldType.INTEGER, mandatory=True),
    FieldSpec("i8n", "Big_Quantity", FieldType.INTEGER),
    FieldSpec("i2", "Small", FieldType.INTEGER, mandatory=True),
    FieldSpec("i8n", "Big_Decimal", FieldType.DECIMAL),
    FieldSpec("i4", "Int_Currency", FieldType.CURRENCY),
    FieldSpec("n122", "Amount", FieldType.CURRENCY, mandatory=True),
    FieldSpec("n202", "Big_Amount", FieldType.DECIMAL),
    FieldSpec("nneg", "Hundreds", FieldType.DECIMAL, mandatory=True),
    FieldSpec("nfree", "Free", FieldType.DECIMAL, mandatory=True),
    FieldSpec("v10", "Short", FieldType.TEXT, max_length=10, mandatory=True),
    FieldSpec("v300", "Long", FieldType.TEXT, max_length=255),
    FieldSpec("c5", "Code", FieldType.PICKLIST, max_length=5),
    FieldSpec("txt", "Notes", FieldType.MULTILINE, mandatory=True),
]


@pytest.fixture(scope="module")
def conn() -> Iterator[psycopg2.extensions.connection]:
    with scratch_connection("ordersync_colrules", DDL) as connection:
        with connection, connection.cursor() as cur:
            columns = list(VALUES)
            rows = max(len(v) for v in VALUES.values()) * 7
            table = [list(islice(cycle(VALUES[c]), rows)) for c in columns]
            cur.executemany(
                sql.SQL("INSERT INTO public.typed ({}) VALUES ({})").format(
                    sql.SQL(", ").join(map(sql.Identifier, columns)),
                    sql.SQL(", ").join(sql.Placeholder() * len(columns)),
                ),
                list(zip(*table, strict=True)),
            )
        yield connection


@pytest.fixture(scope="module")
def columns(conn: psycopg2.extensions.connection) -> dict[str, ColumnInfo]:
    from pipeline.legacy.names import column_info

    class _Source:
        schema, table = "public", "typed"

    class _Settings:
        source = _Source()

    return column_info(conn, _Settings())  # type: ignore[arg-type]


def test_the_catalog_is_read_as_declared(columns: dict[str, ColumnInfo]) -> None:
    assert columns["i8"] == ColumnInfo("bigint", True, sql_type="bigint")
    assert columns["i4"] == ColumnInfo("integer", False, sql_type="integer")
    assert (columns["n122"].precision, columns["n122"].scale) == (12, 2)
    assert columns["n122"].sql_type == "numeric(12,2)"
    assert (columns["nneg"].precision, columns["nneg"].scale) == (3, -2)
    assert columns["nfree"].precision is None
    assert columns["v10"].length == 10 and columns["c5"].length == 5
    assert columns["txt"].length is None


def test_every_rewrite_breaks_on_exactly_the_rows_the_canonical_test_does(
    conn: psycopg2.extensions.connection, columns: dict[str, ColumnInfo]
) -> None:
    rewritten = dropped = broken_somewhere = 0
    with conn.cursor() as cur:
        for spec in SPECS:
            for check in checks_for(spec):
                canonical = check.predicate(text_expression(spec, "t"))
                fast = column_predicate(check, columns[spec.column], "t")
                rewritten += fast is not None and fast != canonical
                dropped += fast is None
                cur.execute(
                    sql.SQL(
                        "SELECT count(*) FILTER (WHERE {c}),"
                        " count(*) FILTER (WHERE ({c}) IS DISTINCT FROM ({f}))"
                        " FROM public.typed t"
                    ).format(c=canonical, f=fast if fast is not None else sql.SQL("false"))
                )
                breaking, differing = cur.fetchone()  # type: ignore[misc]
                assert differing == 0, f"{check.label} on {columns[spec.column]}"
                broken_somewhere += breaking > 0
                if fast is None:
                    assert breaking == 0, f"{check.label} dropped, yet rows break it"
    conn.rollback()
    # the table has teeth: rules are broken, and both kinds of rewrite happen
    assert broken_somewhere >= 8 and rewritten >= 5 and dropped >= 6


def test_the_orders_table_drops_what_its_types_settle(
    conn: psycopg2.extensions.connection, columns: dict[str, ColumnInfo]
) -> None:
    key = FieldSpec("i8", "parent_id", FieldType.TEXT, mandatory=True)
    assert [column_predicate(c, columns["i8"], "t") for c in checks_for(key)] == [None, None]
    amount = FieldSpec("n122", "Amount", FieldType.CURRENCY)
    (decimal_range,) = checks_for(amount)
    assert decimal_range.rule is Rule.DECIMAL_RANGE
    assert column_predicate(decimal_range, columns["n122"], "t") is None
    quantity = FieldSpec("i4", "Quantity", FieldType.INTEGER)
    (integer_range,) = checks_for(quantity)
    fast = column_predicate(integer_range, columns["i4"], "t")
    assert fast is not None
    assert "NOT BETWEEN -999999999 AND 999999999" in " ".join(fast.as_string(conn).split())
