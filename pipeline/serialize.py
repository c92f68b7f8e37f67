"""The one serialiser: every mapped value is formatted once, in SQL, the same way for CSV and JSON.

For each :class:`~pipeline.mapping.FieldSpec`, :func:`text_expression` gives a SQL expression
whose result is the value's canonical text:

============================  ==========================================================
type                          canonical text
============================  ==========================================================
text, multiline, email,       the text as is (any Unicode, commas, quotes, newlines);
picklist                      an empty string counts as NULL
integer                       ``-42``
decimal, currency             exact ``numeric::text``, e.g. ``1234.50`` (never a float)
date                          ``yyyy-MM-dd``
datetime                      ISO-8601 with the org time zone's offset,
                              e.g. ``2024-05-01T13:45:00+05:30``
boolean                       ``true`` / ``false``
============================  ==========================================================

The CSV of a bulk job is ``COPY (SELECT <those expressions> …) TO STDOUT WITH (FORMAT csv)``
(PostgreSQL writes the text; Python never touches a value), and the JSON of an upsert is built
from the very same text by :func:`json_value`. The datetime expression formats in the session
time zone, so every transaction that reads through these expressions first runs
:func:`session_timezone_sql` (``SET LOCAL TIME ZONE <org tz>``).

NULL and ``ignore_empty``
    A NULL (or empty text) is an empty CSV cell. With ``ignore_empty = false`` (our default)
    Zoho clears the field for an empty cell, and the JSON path sends ``null``: both clear it.
    With ``ignore_empty = true`` an empty cell leaves Zoho's value untouched, so the JSON path
    must leave the key out instead of sending ``null``: pass ``ignore_empty=True`` to
    :func:`json_record`. Either way both paths mean the same thing to Zoho.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping as MappingABC
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from psycopg2 import sql

from pipeline.mapping import FieldSpec, FieldType, Mapping

JsonValue = str | int | bool | Decimal | None

DATE_SQL_FORMAT = "YYYY-MM-DD"
DATETIME_SQL_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SSTZH:TZM'
# Java-style patterns for the ``format`` of a bulk job's field mapping (contract §3.3, §8.2).
ZOHO_DATE_FORMAT = "yyyy-MM-dd"
ZOHO_DATETIME_FORMAT = "yyyy-MM-dd'T'HH:mm:ssXXX"

_TEXT_TYPES = frozenset({FieldType.TEXT, FieldType.MULTILINE, FieldType.EMAIL, FieldType.PICKLIST})
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")


def text_expression(spec: FieldSpec, qualifier: str | None = None) -> sql.Composable:
    """The SQL expression giving ``spec``'s canonical text (NULL stays NULL).

    ``qualifier`` is the table alias the column is read from, if any.
    """
    col: sql.Composable = (
        sql.Identifier(qualifier, spec.column) if qualifier else sql.Identifier(spec.column)
    )
    kind = spec.type
    if kind in _TEXT_TYPES:
        return sql.SQL("NULLIF({}::text, '')").format(col)
    if kind is FieldType.INTEGER:
        return sql.SQL("({})::text").format(col)  # an integer column; no silent rounding
    if kind in (FieldType.DECIMAL, FieldType.CURRENCY):
        return sql.SQL("({})::numeric::text").format(col)
    if kind is FieldType.DATE:
        return sql.SQL("to_char(({})::date, {})").format(col, sql.Literal(DATE_SQL_FORMAT))
    if kind is FieldType.DATETIME:
        return sql.SQL("to_char(({})::timestamptz, {})").format(
            col, sql.Literal(DATETIME_SQL_FORMAT)
        )
    if kind is FieldType.BOOLEAN:
        return sql.SQL("({})::boolean::text").format(col)
    raise ValueError(f"no serialiser for field type {kind!r}")


def select_list(mapping: Mapping, qualifier: str | None = None) -> sql.Composable:
    """The SELECT list of every mapped field's canonical text, in mapping (CSV column) order."""
    return sql.SQL(", ").join(text_expression(spec, qualifier) for spec in mapping.fields)


def session_timezone_sql(timezone: str) -> sql.Composable:
    """``SET LOCAL TIME ZONE``: run it in every transaction that reads through the expressions."""
    return sql.SQL("SET LOCAL TIME ZONE {}").format(sql.Literal(timezone))


def zoho_format(spec: FieldSpec) -> str | None:
    """The ``format`` a bulk job must declare for this column (dates and datetimes), else None."""
    if spec.type is FieldType.DATE:
        return ZOHO_DATE_FORMAT
    if spec.type is FieldType.DATETIME:
        return ZOHO_DATETIME_FORMAT
    return None


def json_value(spec: FieldSpec, text: str | None) -> JsonValue:
    """The JSON value of a canonical text: numbers exact, booleans as booleans, empty as None.

    An empty string means NULL, as in a CSV cell.
    """
    if text is None or text == "":
        return None
    kind = spec.type
    if kind is FieldType.INTEGER:
        return int(text)
    if kind in (FieldType.DECIMAL, FieldType.CURRENCY):
        if not _NUMBER.fullmatch(text):
            raise ValueError(f"{spec.column}: {text!r} is not a finite decimal")
        return Decimal(text)
    if kind is FieldType.BOOLEAN:
        if text not in ("true", "false"):
            raise ValueError(f"{spec.column}: {text!r} is not a boolean")
        return text == "true"
    return text


def json_record(
    mapping: Mapping, texts: Sequence[str | None], *, ignore_empty: bool = False
) -> dict[str, JsonValue]:
    """One upsert record ``{api_name: value}`` from a row of canonical texts in mapping order.

    With ``ignore_empty`` the keys of empty values are left out (Zoho keeps its value), else
    they are sent as ``null`` (Zoho clears the field), matching the bulk job's empty cells.
    """
    if len(texts) != len(mapping.fields):
        raise ValueError(f"expected {len(mapping.fields)} values, got {len(texts)}")
    record: dict[str, JsonValue] = {}
    for spec, text in zip(mapping.fields, texts, strict=True):
        value = json_value(spec, text)
        if value is None and ignore_empty:
            continue
        record[spec.api_name] = value
    return record


def dumps(obj: Any) -> str:
    """JSON text of dicts, lists, str, int, bool, None and Decimal, decimals written exactly.

    ``json.dumps`` would need a float for a Decimal; we write its digits as a JSON number.
    """
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, Decimal):
        if not obj.is_finite():
            raise ValueError(f"{obj} has no JSON number")
        return format(obj, "f")
    if isinstance(obj, int | str):
        return json.dumps(obj, ensure_ascii=False)
    if isinstance(obj, MappingABC):
        items = (f"{json.dumps(str(k), ensure_ascii=False)}:{dumps(v)}" for k, v in obj.items())
        return "{" + ",".join(items) + "}"
    if isinstance(obj, list | tuple):
        return "[" + ",".join(dumps(v) for v in obj) + "]"
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")
