"""The mapping checked against what the Zoho module will accept, one line per problem.

Used by ``ordersync config check``, the dry run and the start of every run: an error stops
them before any credit is spent on rows Zoho would refuse. ``distinct`` reads the values a
legacy column holds (for picklists); it is optional so the check also runs without a database.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import replace

import psycopg2
import psycopg2.errors
import redis
from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline.legacy.names import Names
from pipeline.mapping import FieldType, Mapping
from pipeline.settings import Problem, Settings, Severity
from pipeline.zoho.client import ZohoClient
from pipeline.zoho.errors import ZohoError
from pipeline.zoho.fields import COMPATIBLE, ZohoField, module_fields

# Picklist values of the table read at most, per column.
DISTINCT_LIMIT = 1_000
_TEXT_KINDS = (FieldType.TEXT, FieldType.MULTILINE, FieldType.EMAIL, FieldType.PICKLIST)


def _key(i: int, api_name: str) -> str:
    return f"mapping[{i}] ({api_name})"


def check_mapping(
    mapping: Mapping,
    fields: dict[str, ZohoField],
    *,
    module: str,
    distinct: Callable[[str], Sequence[str]] | None = None,
) -> list[Problem]:
    """Every way the mapping disagrees with the module's fields (errors and warnings)."""
    problems: list[Problem] = []
    mapped = set(mapping.api_names)
    for i, spec in enumerate(mapping.fields):
        key = _key(i, spec.api_name)
        field = fields.get(spec.api_name)
        if field is None:
            close = difflib.get_close_matches(spec.api_name, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(
                Problem(key, f"Zoho module {module} has no field {spec.api_name!r}{hint}")
            )
            continue
        if not field.settable:
            why = "read-only" if field.read_only else f"a {field.data_type} field"
            problems.append(Problem(key, f"{spec.api_name} is {why}: Bulk Write cannot set it"))
        if field.data_type not in COMPATIBLE[spec.type]:
            problems.append(
                Problem(key, f"type {spec.type} cannot feed Zoho's {field.data_type} field")
            )
        if (
            spec.type in _TEXT_KINDS
            and spec.max_length is not None
            and field.length is not None
            and spec.max_length > field.length
        ):
            problems.append(
                Problem(
                    key,
                    f"max_length {spec.max_length} is above Zoho's length {field.length}:"
                    f" longer values would be refused (set max_length = {field.length})",
                )
            )
        if spec.type is FieldType.PICKLIST and field.picklist:
            problems += _picklist(key, spec.api_name, spec.column, spec.allowed, field, distinct)
        if spec.api_name == mapping.unique_field and not field.unique:
            problems.append(
                Problem(
                    key,
                    f"{spec.api_name} is the unique field (find_by) but Zoho does not mark it"
                    " unique: make it unique in Zoho's field settings",
                )
            )
    for name, field in sorted(fields.items()):
        if field.mandatory and field.settable and name not in mapped:
            problems.append(
                Problem(
                    "mapping",
                    f"Zoho field {name} is mandatory but not mapped: every new record would be"
                    " refused (MANDATORY_NOT_FOUND)",
                )
            )
    return problems


def _picklist(
    key: str,
    api_name: str,
    column: str,
    allowed: Sequence[str],
    field: ZohoField,
    distinct: Callable[[str], Sequence[str]] | None,
) -> list[Problem]:
    severity = Severity.WARNING if field.restricted is False else Severity.ERROR
    how = {True: "restricted", False: "not restricted", None: "restriction not stated"}[
        field.restricted
    ]
    out: list[Problem] = []
    unknown = [v for v in allowed if v not in field.picklist]
    if unknown:
        out.append(
            Problem(
                key,
                f"allowed lists {', '.join(map(repr, unknown))}, which Zoho's {api_name} picklist"
                f" ({how}) lacks",
                severity,
            )
        )
    if distinct is not None:
        held = [v for v in distinct(column) if v not in field.picklist and v not in unknown]
        if held:
            shown = ", ".join(map(repr, held[:10])) + (", …" if len(held) > 10 else "")
            out.append(
                Problem(
                    key,
                    f"the table's {column} holds {shown}, which Zoho's {api_name} picklist ({how})"
                    " lacks: those rows are held back, never sent (fix the data, or add the"
                    " values in Zoho)",
                    Severity.WARNING,  # bad rows, not a bad mapping: the run goes on
                )
            )
    return out


def distinct_reader(conn: Connection, settings: Settings) -> Callable[[str], Sequence[str]]:
    """Read up to ``DISTINCT_LIMIT`` distinct non-empty values of a legacy column."""
    n = Names(settings)

    def read(column: str) -> Sequence[str]:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT DISTINCT {c}::text FROM {t} WHERE {c} IS NOT NULL AND {c}::text <> ''"
                    " ORDER BY 1 LIMIT %s"
                ).format(c=sql.Identifier(column), t=n.table),
                (DISTINCT_LIMIT,),
            )
            return [str(r[0]) for r in cur.fetchall()]

    return read


def against_zoho(
    settings: Settings, conn: Connection | None = None, *, client: ZohoClient | None = None
) -> list[Problem]:
    """Read the module's fields (cached, or 1 credit) and check the mapping against them, with
    the table's picklist values when ``conn`` is given. Zoho unreachable → one warning.
    ``client``: a worker's own (else a short-lived one that fails fast)."""
    try:
        if client is not None:
            fields = module_fields(client)
        else:
            quick = replace(settings.zoho, max_retries=0, connect_timeout=3.0, read_timeout=15.0)
            own = ZohoClient.from_settings(replace(settings, zoho=quick))
            try:
                fields = module_fields(own)
            finally:
                own.close()
    except psycopg2.errors.UndefinedTable:
        return [
            Problem(
                "zoho",
                "the mapping was not checked against Zoho's fields: run `ordersync db install`"
                " first (the 1-credit read is recorded in its credit ledger)",
                Severity.WARNING,
            )
        ]
    except (ZohoError, psycopg2.Error, redis.RedisError, OSError) as exc:
        reason = getattr(exc, "message", "") or type(exc).__name__
        return [
            Problem(
                "zoho",
                f"the mapping was not checked against Zoho's fields ({reason})",
                Severity.WARNING,
            )
        ]
    distinct = None if conn is None else distinct_reader(conn, settings)
    return check_mapping(settings.mapping, fields, module=settings.zoho.module, distinct=distinct)


# ---------------------------------------------------------------------------------------------
# ``ordersync mapping suggest``
# ---------------------------------------------------------------------------------------------

# The mapped field type for each Zoho data type a column can feed.
FIELD_TYPE_OF: dict[str, FieldType] = {
    "text": FieldType.TEXT,
    "textarea": FieldType.MULTILINE,
    "email": FieldType.EMAIL,
    "picklist": FieldType.PICKLIST,
    "integer": FieldType.INTEGER,
    "bigint": FieldType.INTEGER,
    "double": FieldType.DECIMAL,
    "decimal": FieldType.DECIMAL,
    "currency": FieldType.CURRENCY,
    "date": FieldType.DATE,
    "datetime": FieldType.DATETIME,
    "boolean": FieldType.BOOLEAN,
}


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _best_match(
    column: str,
    pg_type: str,
    by_norm: dict[str, ZohoField],
    used: set[str],
    accepts: Callable[[FieldType, str], bool],
) -> ZohoField | None:
    """The settable field whose name is closest to the column's (exact, one name inside the
    other, or similar), among those the column's type can feed; None below 0.6."""
    want = _norm(column)
    best: tuple[float, ZohoField] | None = None
    for norm, field in by_norm.items():
        kind = FIELD_TYPE_OF.get(field.data_type)
        if field.api_name in used or kind is None or not accepts(kind, pg_type):
            continue
        if norm == want:
            score = 1.0
        elif min(len(norm), len(want)) >= 4 and (norm in want or want in norm):
            score = 0.8
        else:
            score = difflib.SequenceMatcher(None, norm, want).ratio()
        if best is None or score > best[0]:
            best = (score, field)
    return best[1] if best is not None and best[0] >= 0.6 else None


def suggest_mapping(
    columns: Sequence[tuple[str, str]],
    fields: dict[str, ZohoField],
    *,
    key_column: str,
    unique_field: str,
    accepts: Callable[[FieldType, str], bool],
    distinct: Callable[[str], Sequence[str]] | None = None,
) -> str:
    """A ``[[mapping]]`` block for ``columns`` ((name, PostgreSQL type), table order): each
    matched by name to a settable Zoho field whose type it can feed; the rest commented out."""
    by_norm = {_norm(n): f for n, f in fields.items() if f.settable}
    out: list[str] = []
    used: set[str] = set()
    for column, pg_type in columns:
        field = (
            fields.get(unique_field)
            if column == key_column
            else _best_match(column, pg_type, by_norm, used, accepts)
        )
        kind = None if field is None else FIELD_TYPE_OF.get(field.data_type)
        if field is None or kind is None or field.api_name in used or not accepts(kind, pg_type):
            why = (
                "no Zoho field of that name"
                if field is None
                else (f"Zoho's {field.api_name} is {field.data_type}, the column is {pg_type}")
            )
            out += [f"# [[mapping]]  # {column}: {why}", f'# column = "{column}"', ""]
            continue
        used.add(field.api_name)
        out += ["[[mapping]]", f'column = "{column}"', f'api_name = "{field.api_name}"',
                f'type = "{kind}"']  # fmt: skip
        if kind in (FieldType.TEXT, FieldType.MULTILINE) and field.length:
            out.append(f"max_length = {field.length}")
        if field.mandatory or field.api_name == unique_field:
            out.append("mandatory = true")
        if kind is FieldType.PICKLIST and field.picklist:
            out.append("allowed = [" + ", ".join(f'"{v}"' for v in field.picklist) + "]")
            if distinct is not None:
                lacking = [v for v in distinct(column) if v not in field.picklist]
                if lacking:
                    out.append(
                        "# the table holds values Zoho's picklist lacks (rows held back): "
                        + ", ".join(map(repr, lacking[:20]))
                    )
        out.append("")
    missing = sorted(n for n, f in fields.items() if f.mandatory and f.settable and n not in used)
    if missing:
        out.append("# Zoho fields that are mandatory and not matched: " + ", ".join(missing))
    return "\n".join(out).rstrip() + "\n"
