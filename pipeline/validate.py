"""The module's field rules, checked in SQL before a sync: which pending rows Zoho would refuse.

``ordersync sync initial --dry-run`` uses :func:`check_pending` to show, per field and rule,
how many pending rows break it and the first keys that do. The checks run in PostgreSQL over
the same canonical text the sync sends (``pipeline.serialize.text_expression``), in one scan of
the pending rows; Python only receives the counts and a few keys, never the table.

Rules, per :class:`~pipeline.mapping.FieldSpec` (Zoho's answer in brackets):

* ``mandatory``: a mandatory field is empty [``MANDATORY_NOT_FOUND``];
* ``max_length``: text longer than the field allows (``max_length``, else Zoho's default for
  the type) [``INVALID_DATA``];
* ``email``: not an address by :data:`EMAIL_REGEX` (the pattern zohosim uses, close to Zoho's)
  [``INVALID_DATA``];
* ``picklist``: not one of ``allowed`` (when the mapping lists them) [``INVALID_DATA``];
* ``integer_range``: an integer with more than 9 digits [``INVALID_DATA``];
* ``decimal_range``: a decimal or currency with more than 16 digits before the point
  [``INVALID_DATA``].

Dates, datetimes and booleans come from typed columns and are always well-formed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline.legacy.names import ColumnInfo, Names
from pipeline.mapping import FieldSpec, FieldType
from pipeline.serialize import text_expression
from pipeline.settings import Settings

# zohosim/schema.py EMAIL_RE, in PostgreSQL's regex dialect.
EMAIL_REGEX = r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$"
# Zoho's default lengths where the mapping gives none.
DEFAULT_MAX_LENGTH: dict[FieldType, int] = {
    FieldType.TEXT: 255,
    FieldType.MULTILINE: 32_000,
    FieldType.EMAIL: 100,
    FieldType.PICKLIST: 120,
}
INTEGER_MAX_DIGITS = 9
DECIMAL_MAX_WHOLE_DIGITS = 16
DEFAULT_SAMPLE = 10


class Rule(StrEnum):
    """A field rule Zoho enforces on every record."""

    MANDATORY = "mandatory"
    MAX_LENGTH = "max_length"
    EMAIL = "email"
    PICKLIST = "picklist"
    INTEGER_RANGE = "integer_range"
    DECIMAL_RANGE = "decimal_range"

    @property
    def code(self) -> str:
        """The code Zoho answers a row breaking this rule with."""
        return "MANDATORY_NOT_FOUND" if self is Rule.MANDATORY else "INVALID_DATA"


@dataclass(frozen=True)
class Check:
    """One rule on one field, as a SQL predicate over the canonical text ``v``."""

    spec: FieldSpec
    rule: Rule
    limit: int | None = None  # the length or digit count, for the message

    @property
    def label(self) -> str:
        """``<api_name>.<rule>``: the name under which offenders are counted."""
        return f"{self.spec.api_name}.{self.rule}"

    def describe(self) -> str:
        """What the rule demands, for people."""
        if self.rule is Rule.MANDATORY:
            return "must not be empty"
        if self.rule is Rule.MAX_LENGTH:
            return f"at most {self.limit} characters"
        if self.rule is Rule.EMAIL:
            return "an email address"
        if self.rule is Rule.PICKLIST:
            return "one of " + ", ".join(self.spec.allowed)
        if self.rule is Rule.INTEGER_RANGE:
            return f"at most {self.limit} digits"
        return f"at most {self.limit} digits before the point"

    def predicate(self, value: sql.Composable) -> sql.Composable:
        """True for a row that breaks the rule (never NULL)."""
        if self.rule is Rule.MANDATORY:
            return sql.SQL("({} IS NULL)").format(value)
        if self.rule is Rule.MAX_LENGTH:
            return sql.SQL("coalesce(char_length({}) > {}, false)").format(
                value, sql.Literal(self.limit)
            )
        if self.rule is Rule.EMAIL:
            return sql.SQL("coalesce({} !~ {}, false)").format(value, sql.Literal(EMAIL_REGEX))
        if self.rule is Rule.PICKLIST:
            return sql.SQL("coalesce({} <> ALL({}::text[]), false)").format(
                value, sql.Literal(list(self.spec.allowed))
            )
        if self.rule is Rule.INTEGER_RANGE:
            return sql.SQL("coalesce(length(ltrim({}, '-')) > {}, false)").format(
                value, sql.Literal(self.limit)
            )
        return sql.SQL("coalesce(length(split_part(ltrim({}, '-'), '.', 1)) > {}, false)").format(
            value, sql.Literal(self.limit)
        )


def checks_for(spec: FieldSpec) -> list[Check]:
    """The rules Zoho applies to one mapped field."""
    found: list[Check] = []
    if spec.mandatory:
        found.append(Check(spec, Rule.MANDATORY))
    if spec.type in DEFAULT_MAX_LENGTH:
        found.append(Check(spec, Rule.MAX_LENGTH, spec.max_length or DEFAULT_MAX_LENGTH[spec.type]))
    if spec.type is FieldType.EMAIL:
        found.append(Check(spec, Rule.EMAIL))
    if spec.type is FieldType.PICKLIST and spec.allowed:
        found.append(Check(spec, Rule.PICKLIST))
    if spec.type is FieldType.INTEGER:
        found.append(Check(spec, Rule.INTEGER_RANGE, INTEGER_MAX_DIGITS))
    if spec.type in (FieldType.DECIMAL, FieldType.CURRENCY):
        found.append(Check(spec, Rule.DECIMAL_RANGE, DECIMAL_MAX_WHOLE_DIGITS))
    return found


@dataclass(frozen=True)
class Violation:
    """How many checked rows break one rule of one field, and the first keys (in key order)."""

    field: str
    column: str
    rule: Rule
    rows: int
    first_keys: tuple[str, ...]
    requirement: str

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "field": self.field,
            "column": self.column,
            "rule": str(self.rule),
            "code": self.rule.code,
            "rows": self.rows,
            "first_keys": list(self.first_keys),
            "requirement": self.requirement,
        }


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of :func:`check_pending`: rows checked, rows breaking any rule, by rule."""

    checked: int
    bad_rows: int
    violations: tuple[Violation, ...]


def check_pending(
    conn: Connection, settings: Settings, *, sample: int = DEFAULT_SAMPLE
) -> ValidationReport:
    """Check every pending row against the mapping's field rules, in one read-only scan.

    ``sample`` bounds the keys kept per rule (the first ones in key order). Rules that no row
    breaks are left out of ``violations``. Runs in the caller's transaction; writes nothing.
    """
    n = Names(settings)
    checks = [c for spec in settings.mapping.fields for c in checks_for(spec)]
    if not checks:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE NOT {}").format(n.table, n.synced))
            return ValidationReport(int(cur.fetchone()[0]), 0, ())  # type: ignore[index]
    labels = sql.SQL(", ").join(
        sql.SQL("CASE WHEN {} THEN {} END").format(
            c.predicate(text_expression(c.spec, "t")), sql.Literal(i)
        )
        for i, c in enumerate(checks)
    )
    # One scan: each pending row carries the indexes of the checks it fails.
    statement = sql.SQL(
        """WITH s AS MATERIALIZED (
               SELECT t.{key}::text AS row_key, t.{key} AS sort_key,
                      array_remove(ARRAY[{labels}]::int[], NULL) AS failed
               FROM {table} t WHERE NOT t.{synced}),
           per_rule AS (
               SELECT f.i, count(*) AS rows,
                      (array_agg(s.row_key ORDER BY s.sort_key))[1:{sample}] AS keys
               FROM s CROSS JOIN LATERAL unnest(s.failed) AS f(i)
               GROUP BY f.i)
           SELECT -1, (SELECT count(*) FROM s), (SELECT count(*) FROM s WHERE failed <> '{{}}'),
                  NULL::text[]
           UNION ALL
           SELECT i, rows, NULL, keys FROM per_rule"""
    ).format(key=n.key, labels=labels, table=n.table, synced=n.synced, sample=sql.Literal(sample))
    with conn.cursor() as cur:
        cur.execute(statement)  # no parameters: literals may hold "%"
        fetched = cur.fetchall()
    checked = bad = 0
    violations: list[Violation] = []
    for index, count, bad_count, keys in fetched:
        if index == -1:
            checked, bad = int(count), int(bad_count)
            continue
        check = checks[index]
        violations.append(
            Violation(
                field=check.spec.api_name,
                column=check.spec.column,
                rule=check.rule,
                rows=int(count),
                first_keys=tuple(keys or ()),
                requirement=check.describe(),
            )
        )
    violations.sort(
        key=lambda v: (settings.mapping.api_names.index(v.field), list(Rule).index(v.rule))
    )
    return ValidationReport(checked, bad, tuple(violations))


# ---------------------------------------------------------------------------------------------
# Rows held back before sending (pipeline.legacy.extract uses these in its claims)
# ---------------------------------------------------------------------------------------------

# The shape of a value, never the value (it may be personal data): letters → a/A, digits → 9.
_LOWER = "abcdefghijklmnopqrstuvwxyzàáâãäåçèéêëìíîïñòóôõöùúûüýÿ"
_UPPER = _LOWER.upper()
_DIGITS = "0123456789"
SHAPE_CHARS = 24  # characters of a value's shape kept in the message


def all_checks(settings: Settings) -> list[Check]:
    """Every field rule of the mapping, in field order."""
    return [c for spec in settings.mapping.fields for c in checks_for(spec)]


def _shape(value: sql.Composable) -> sql.Composable:
    """SQL: the value's shape and length, e.g. ``"Aaaa@aaaa" (9 chars)``, or ``empty``."""
    shape = sql.SQL("translate({v}, {src}, {dst})").format(
        v=value,
        src=sql.Literal(_LOWER + _UPPER + _DIGITS),
        dst=sql.Literal("a" * len(_LOWER) + "A" * len(_UPPER) + "9" * len(_DIGITS)),
    )
    return sql.SQL(
        "CASE WHEN {v} IS NULL THEN 'empty' ELSE '\"' || left({shape}, {n})"
        " || CASE WHEN char_length({v}) > {n} THEN '…' ELSE '' END || '\" ('"
        " || char_length({v}) || ' chars)' END"
    ).format(v=value, shape=shape, n=sql.Literal(SHAPE_CHARS))


def invalid_predicate(
    settings: Settings, alias: str = "t", columns: dict[str, ColumnInfo] | None = None
) -> sql.Composable | None:
    """SQL true for a row of ``alias`` that breaks any field rule; None when there are none.

    With ``columns`` (``pipeline.legacy.names.column_info``) each rule is tested as cheaply as
    its column's type allows (:func:`column_predicate`), and rules that no value of the type
    can break are left out: the same rows, for ~10 % less CPU on the demo's orders table.
    """
    columns = columns or {}
    tests = [column_predicate(c, columns.get(c.spec.column), alias) for c in all_checks(settings)]
    kept = [t for t in tests if t is not None]
    if not kept:
        return None
    return sql.SQL("({})").format(sql.SQL(" OR ").join(kept))


# The most characters an integer column's text can have, its sign included.
INTEGER_TEXT_WIDTH = {"smallint": 6, "integer": 11, "bigint": 20}
_NUMERIC_KINDS = frozenset({FieldType.INTEGER, FieldType.DECIMAL, FieldType.CURRENCY})


def column_predicate(check: Check, column: ColumnInfo | None, alias: str) -> sql.Composable | None:
    """``check``'s predicate for a column of this type: true on exactly the same rows as the
    test of the canonical text (``Check.predicate``), or None when no value of the type can
    break the rule. The canonical test where the type does not settle it (or is unknown).

    An integer column's text is its digits and sign, never empty: mandatory is ``IS NULL``
    (nothing, if the column is ``NOT NULL``), a length cap at least its widest text is never
    reached, a digit limit is a range (``NOT BETWEEN``, no text built). A constrained numeric
    has at most ``precision - scale`` digits before the point, a constrained varchar or char
    at most ``length`` characters.
    """
    canonical = check.predicate(text_expression(check.spec, alias))
    if column is None:
        return canonical
    col = sql.Identifier(alias, check.spec.column)
    kind, rule = check.spec.type, check.rule
    if rule is Rule.MANDATORY and kind in _NUMERIC_KINDS | {FieldType.TEXT} and (
        column.type_name in INTEGER_TEXT_WIDTH or column.type_name == "numeric"
    ):
        return None if column.not_null else sql.SQL("({} IS NULL)").format(col)
    width = INTEGER_TEXT_WIDTH.get(column.type_name)
    limit = check.limit if check.limit is not None else 0
    if width is not None and rule is Rule.MAX_LENGTH and limit >= width:
        return None
    if width is not None and rule in (Rule.INTEGER_RANGE, Rule.DECIMAL_RANGE):
        if width - 1 <= limit:  # every value of the type has few enough digits
            return None
        bound = 10**limit - 1
        return sql.SQL("coalesce({} NOT BETWEEN {} AND {}, false)").format(
            col, sql.Literal(-bound), sql.Literal(bound)
        )
    if (
        rule is Rule.DECIMAL_RANGE
        and column.type_name == "numeric"
        and column.precision is not None
        and column.scale is not None
        and column.precision - column.scale <= limit
    ):
        return None
    if rule is Rule.MAX_LENGTH and column.length is not None and column.length <= limit:
        return None
    return canonical


def fault_columns(settings: Settings, alias: str = "t") -> tuple[sql.Composable, sql.Composable]:
    """SQL for (the first field a row breaks, every broken rule in one line with value shapes).

    E.g. ``Email`` and ``Email: email (an email address), value "aaaa" (4 chars); Status:
    picklist (one of …), value "Aaaaaaa" (7 chars)``. For rows that break at least one rule.
    """
    checks = all_checks(settings)
    if not checks:
        return sql.SQL("NULL::text"), sql.SQL("NULL::text")
    first = sql.SQL("coalesce({})").format(
        sql.SQL(", ").join(
            sql.SQL("CASE WHEN {} THEN {} END").format(
                c.predicate(text_expression(c.spec, alias)), sql.Literal(c.spec.api_name)
            )
            for c in checks
        )
    )
    message = sql.SQL("concat_ws('; ', {})").format(
        sql.SQL(", ").join(
            sql.SQL("CASE WHEN {p} THEN {label} || {shape} END").format(
                p=c.predicate(text_expression(c.spec, alias)),
                label=sql.Literal(f"{c.spec.api_name}: {c.rule} ({c.describe()}), value "),
                shape=_shape(text_expression(c.spec, alias)),
            )
            for c in checks
        )
    )
    return first, message
