"""One typed settings object, read once from ``ordersync.toml`` and ``ORDERSYNC_*`` variables.

The data shapes below are the contract every other module codes against; loading and
validation (``load_settings``) live further down.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import tomllib
import zoneinfo
from collections.abc import Iterable
from collections.abc import Mapping as EnvMapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from pipeline.mapping import FieldSpec, FieldType, Mapping
from pipeline.secret import Secret
from pipeline.zoho.config import ZohoSettings
from pipeline.zoho.endpoints import DATA_CENTRES, Endpoints
from pipeline.zoho.limits import BULK_MAX_COLUMNS, MULTILINE_MAX_LENGTH, TEXT_MAX_LENGTH

MAX_BATCH_SIZE = 25_000


class SyncMode(StrEnum):
    REALTIME = "realtime"
    INTERVAL = "interval"
    BOTH = "both"


@dataclass(frozen=True)
class SourceSettings:
    """The legacy table and where our sync state lives."""

    dsn: Secret = field(
        default_factory=lambda: Secret("postgresql://postgres@127.0.0.1:5432/orders")
    )
    schema: str = "public"
    table: str = "orders"
    key_column: str = "id"
    synced_column: str = "synced"
    version_column: str = "sync_version"
    zoho_id_column: str = "zoho_id"
    ledger_schema: str = "ordersync"


@dataclass(frozen=True)
class Settings:
    """Everything ordersync reads from configuration."""

    source: SourceSettings = field(default_factory=SourceSettings)
    zoho: ZohoSettings = field(default_factory=ZohoSettings)
    mapping: Mapping = field(default_factory=lambda: DEFAULT_MAPPING)
    broker_url: str = "redis://127.0.0.1:6379/0"
    redis_url: str = "redis://127.0.0.1:6379/1"  # token cache, governor, locks
    batch_size: int = MAX_BATCH_SIZE
    batches_in_flight: int = 3
    realtime_threshold: int = 100
    realtime_max_delay: float = 600.0  # seconds
    realtime_check: float = 30.0  # seconds between near-real-time checks
    interval_crontab: str = "0 */12 * * *"
    mode: SyncMode = SyncMode.BOTH
    max_attempts: int = 3  # before a row is quarantined
    job_callback_wait: float = 300.0  # seconds to await a callback before re-creating a job
    stall_after: float = 300.0  # seconds without progress before the sweeper re-enqueues a step
    work_dir: Path = Path("var/ordersync")  # zips and result files
    org_timezone: str = "UTC"
    # When set, the web process's /metrics wants ``Authorization: Bearer <token>``.
    metrics_token: Secret = field(default_factory=lambda: Secret(""))
    # ``ordersync verify`` through beat: a crontab ("0 3 * * 0" = Sundays 03:00), "" = off.
    verify_crontab: str = ""
    verify_repair: bool = False  # scheduled verifications re-queue what the legacy value wins
    verify_zoho_wins: str = ""  # comma-separated Zoho fields whose edits in Zoho are kept


# The demo `orders` table's mapping (see pipeline/demo.py); a real install states its own.
DEFAULT_MAPPING: Mapping = Mapping(
    key_column="id",
    unique_field="parent_id",
    fields=(
        FieldSpec("id", "parent_id", FieldType.TEXT, max_length=255, mandatory=True),
        FieldSpec("order_number", "Name", FieldType.TEXT, max_length=120, mandatory=True),
        FieldSpec("customer_name", "Customer_Name", FieldType.TEXT, max_length=100),
        FieldSpec("customer_email", "Email", FieldType.EMAIL),
        FieldSpec(
            "status",
            "Order_Status",
            FieldType.PICKLIST,
            allowed=("New", "Paid", "Shipped", "Delivered", "Cancelled", "Refunded"),
        ),
        FieldSpec("amount", "Amount", FieldType.CURRENCY),
        FieldSpec(
            "currency",
            "Currency_Code",
            FieldType.PICKLIST,
            allowed=("USD", "EUR", "GBP", "INR", "JPY"),
        ),
        FieldSpec("quantity", "Quantity", FieldType.INTEGER),
        FieldSpec("order_date", "Order_Date", FieldType.DATE),
        FieldSpec("shipped_at", "Shipped_At", FieldType.DATETIME),
        FieldSpec("is_gift", "Is_Gift", FieldType.BOOLEAN),
        FieldSpec("notes", "Notes", FieldType.MULTILINE, max_length=32_000),
    ),
)


# ---------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------

ENV_PREFIX = "ORDERSYNC_"
CONFIG_ENV = "ORDERSYNC_CONFIG"
DEFAULT_CONFIG_FILE = "ordersync.toml"
MASK = "********"

_MAX_LENGTHS = {FieldType.TEXT: TEXT_MAX_LENGTH, FieldType.MULTILINE: MULTILINE_MAX_LENGTH}
_TYPE_VALUES = [t.value for t in FieldType]
_MAPPING_KEYS = ("column", "api_name", "type", "max_length", "allowed", "mandatory")
_NOT_SYNC_KEYS = ("source", "zoho", "mapping")
_SECTION_TYPES: dict[str, type] = {"source": SourceSettings, "zoho": ZohoSettings, "sync": Settings}


class ConfigError(ValueError):
    """A configuration that cannot work; ``key`` names the setting, e.g. ``sync.batch_size``.

    A fatal error: retrying does not help, the configuration must change.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(key, message)
        self.key = key
        self.message = message

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """Something ``config check`` found: ``key`` names the setting to change."""

    key: str
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        return f"{self.severity}: {self.key}: {self.message}"


def load_settings(
    path: str | os.PathLike[str] | None = None, env: EnvMapping[str, str] | None = None
) -> Settings:
    """Read the settings once: TOML file, then ``ORDERSYNC_<SECTION>_<KEY>`` overrides.

    The file is ``path``, else ``$ORDERSYNC_CONFIG``, else ``./ordersync.toml`` if present;
    with none of these the defaults apply. Raises ``ConfigError`` naming the offending key
    for anything that cannot work (see ``validate_settings``).
    """
    env = os.environ if env is None else env
    document = _read_document(path, env)
    values: dict[str, dict[str, Any]] = {name: {} for name in _SECTION_TYPES}
    raw_mapping: object = None
    for name, table in document.items():
        if name == "mapping":
            raw_mapping = table
            continue
        if name not in _SECTION_TYPES:
            raise ConfigError(name, f"unknown section [{name}]{_suggest(name, _TOP_LEVEL)}")
        if not isinstance(table, dict):
            raise ConfigError(name, f"must be a table: [{name}]")
        values[name].update(_section_values(name, table, from_env=False))
    for name, raw in _env_sections(env).items():
        values[name].update(_section_values(name, raw, from_env=True))

    _align_timezones(values)
    source = SourceSettings(**values["source"])
    zoho = ZohoSettings(**values["zoho"])
    if raw_mapping is None:
        mapping = replace(
            DEFAULT_MAPPING, key_column=source.key_column, unique_field=zoho.unique_field
        )
    else:
        mapping = _mapping_from_toml(raw_mapping, source.key_column, zoho.unique_field)
    settings = Settings(source=source, zoho=zoho, mapping=mapping, **values["sync"])
    validate_settings(settings)
    return settings


def zoho_wins_fields(settings: Settings) -> tuple[str, ...]:
    """The fields of ``sync.verify_zoho_wins``: where an edit made in Zoho is kept."""
    return tuple(f.strip() for f in settings.verify_zoho_wins.split(",") if f.strip())


def validate_settings(settings: Settings) -> None:
    """Raise ``ConfigError`` for the first setting that cannot work; return None if all can."""
    source, zoho = settings.source, settings.zoho
    for name in (
        "schema",
        "table",
        "key_column",
        "synced_column",
        "version_column",
        "zoho_id_column",
        "ledger_schema",
    ):
        if not getattr(source, name):
            raise ConfigError(f"source.{name}", "must not be empty")
    sync_columns = (source.synced_column, source.version_column, source.zoho_id_column)
    if len(set(sync_columns)) != 3:
        raise ConfigError("source.synced_column", "the three sync column names must differ")
    if not source.dsn:
        raise ConfigError("source.dsn", "must not be empty")

    if zoho.data_centre not in DATA_CENTRES:
        raise ConfigError(
            "zoho.data_centre",
            f"unknown data centre {zoho.data_centre!r}; use one of {', '.join(DATA_CENTRES)}",
        )
    for name in ("accounts_url", "api_url", "upload_url", "callback_url"):
        url = getattr(zoho, name)
        if url is not None and not url.startswith(("http://", "https://")):
            raise ConfigError(f"zoho.{name}", "must start with http:// or https://")
    for name in ("module", "unique_field"):
        if not getattr(zoho, name):
            raise ConfigError(f"zoho.{name}", "must not be empty")
    _require_at_least("zoho.concurrency", zoho.concurrency, 1)
    _require_at_least("zoho.sub_concurrency", zoho.sub_concurrency, 1)
    _require_at_least("zoho.daily_credit_budget", zoho.daily_credit_budget, 1)
    _require_at_least("zoho.credit_reserve", zoho.credit_reserve, 0)
    if zoho.credit_reserve >= zoho.daily_credit_budget:
        raise ConfigError(
            "zoho.credit_reserve",
            f"{zoho.credit_reserve} leaves nothing of zoho.daily_credit_budget "
            f"({zoho.daily_credit_budget}) for the sync; it must be smaller",
        )
    _require_positive("zoho.connect_timeout", zoho.connect_timeout)
    _require_positive("zoho.read_timeout", zoho.read_timeout)
    _require_at_least("zoho.max_retries", zoho.max_retries, 0)

    for name in ("broker_url", "redis_url"):
        if "://" not in getattr(settings, name):
            raise ConfigError(f"sync.{name}", "must be a URL such as redis://127.0.0.1:6379/0")
    if not 1 <= settings.batch_size <= MAX_BATCH_SIZE:
        raise ConfigError(
            "sync.batch_size",
            f"must be between 1 and {MAX_BATCH_SIZE:,}, not {settings.batch_size:,}",
        )
    _require_at_least("sync.batches_in_flight", settings.batches_in_flight, 1)
    _require_at_least("sync.realtime_threshold", settings.realtime_threshold, 1)
    _require_positive("sync.realtime_max_delay", settings.realtime_max_delay)
    _require_positive("sync.realtime_check", settings.realtime_check)
    _require_at_least("sync.max_attempts", settings.max_attempts, 1)
    crontab_error = crontab_problem(settings.interval_crontab)
    if crontab_error:
        raise ConfigError("sync.interval_crontab", crontab_error)
    if settings.verify_crontab:
        crontab_error = crontab_problem(settings.verify_crontab)
        if crontab_error:
            raise ConfigError("sync.verify_crontab", crontab_error)
    unmapped = [f for f in zoho_wins_fields(settings) if f not in settings.mapping.api_names]
    if unmapped:
        raise ConfigError("sync.verify_zoho_wins",
                          f"names fields that are not mapped: {', '.join(unmapped)}")
    if not isinstance(settings.mode, SyncMode):
        raise ConfigError("sync.mode", f"must be one of {', '.join(SyncMode)}")
    _check_timezone("sync.org_timezone", settings.org_timezone)
    if zoho.org_timezone != settings.org_timezone:
        _check_timezone("zoho.org_timezone", zoho.org_timezone)
    validate_mapping(settings.mapping, sync_columns)


def validate_mapping(mapping: Mapping, sync_columns: tuple[str, ...] = ()) -> None:
    """Raise ``ConfigError`` (key ``mapping[i].<field>``) for a mapping Zoho or we cannot use."""
    if not mapping.fields:
        raise ConfigError("mapping", "no fields are mapped")
    if len(mapping.fields) > BULK_MAX_COLUMNS:
        raise ConfigError(
            "mapping", f"{len(mapping.fields)} fields; a bulk job takes {BULK_MAX_COLUMNS}"
        )
    columns: dict[str, int] = {}
    api_names: dict[str, int] = {}
    for i, spec in enumerate(mapping.fields):
        key = f"mapping[{i}]"
        if not spec.column:
            raise ConfigError(f"{key}.column", "must not be empty")
        if not spec.api_name:
            raise ConfigError(f"{key}.api_name", "must not be empty")
        if spec.column in columns:
            raise ConfigError(
                f"{key}.column",
                f"column {spec.column!r} is already mapped by mapping[{columns[spec.column]}]",
            )
        if spec.api_name in api_names:
            raise ConfigError(
                f"{key}.api_name",
                f"Zoho field {spec.api_name!r} is already fed by "
                f"mapping[{api_names[spec.api_name]}]",
            )
        columns[spec.column] = api_names[spec.api_name] = i
        if spec.column in sync_columns:
            raise ConfigError(
                f"{key}.column", f"{spec.column!r} is one of ordersync's own sync columns"
            )
        if not isinstance(spec.type, FieldType):
            raise ConfigError(
                f"{key}.type", f"unknown type {spec.type!r}; use one of {', '.join(FieldType)}"
            )
        if spec.max_length is not None:
            limit = _MAX_LENGTHS.get(spec.type)
            if limit is None:
                raise ConfigError(
                    f"{key}.max_length", f"applies to text and multiline, not {spec.type}"
                )
            if not 1 <= spec.max_length <= limit:
                raise ConfigError(
                    f"{key}.max_length",
                    f"must be between 1 and {limit:,} for {spec.type}, not {spec.max_length:,}",
                )
        if spec.type is FieldType.PICKLIST and not spec.allowed:
            raise ConfigError(f"{key}.allowed", "a picklist needs its allowed values")
        if spec.allowed and spec.type is not FieldType.PICKLIST:
            raise ConfigError(
                f"{key}.allowed", f"only a picklist has allowed values, not {spec.type}"
            )
        if len(set(spec.allowed)) != len(spec.allowed):
            raise ConfigError(f"{key}.allowed", "lists a value twice")
    position = columns.get(mapping.key_column)
    if position is None:
        raise ConfigError(
            "mapping",
            f"the key column {mapping.key_column!r} (source.key_column) is not mapped; map it to "
            f"{mapping.unique_field!r} (zoho.unique_field)",
        )
    if mapping.fields[position].api_name != mapping.unique_field:
        raise ConfigError(
            f"mapping[{position}].api_name",
            f"the key column {mapping.key_column!r} must map to the unique field "
            f"{mapping.unique_field!r} (zoho.unique_field)",
        )
    if position >= 3:
        raise ConfigError(
            f"mapping[{position}]",
            "the key column must be among the first three mappings, so Zoho's result file names it",
        )


_CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 6),
)
_CRON_NAMES = {
    "month": {
        m: i
        for i, m in enumerate(
            ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
        )
    },
    "day of week": {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))},
}


def crontab_problem(expression: str) -> str | None:
    """What is wrong with a five-field crontab expression (as Celery reads it), or None."""
    parts = expression.split()
    if len(parts) != 5:
        return f"needs 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}"
    for text, (name, low, high) in zip(parts, _CRON_FIELDS, strict=True):
        names = _CRON_NAMES.get(name, {})
        for item in text.split(","):
            span, slash, step = item.partition("/")
            if slash and not (step.isdigit() and int(step) > 0):
                return f"bad step {item!r} in the {name} field"
            if span == "*":
                continue
            ends = span.split("-")
            if len(ends) > 2:
                return f"bad range {item!r} in the {name} field"
            for end in ends:
                value = names.get(end.lower(), int(end) if end.isdigit() else None)
                if value is None or not low <= value <= high:
                    return f"{end!r} is not a valid {name} ({low}-{high}) in {expression!r}"
    return None


def check_settings(settings: Settings) -> list[Problem]:
    """Problems that do not stop loading but would stop or mislead a sync (``config check``).

    Missing Zoho credentials are only found here, not at load, because commands that touch
    the database alone (``db install``, ``demo seed``) do not need them. They are an error
    whether the URLs point at Zoho or at zohosim: both refuse a token refresh without them.
    Overriding some Zoho hosts but not all is a warning: the others stay at the data centre's.
    """
    zoho = settings.zoho
    endpoints = Endpoints.from_settings(zoho)
    problems = []
    for name in ("client_id", "client_secret", "refresh_token"):
        if not getattr(zoho, name):
            problems.append(
                Problem(
                    f"zoho.{name}",
                    f"is not set; the token refresh at {endpoints.token_url} needs it",
                )
            )
    hosts = {
        "accounts_url": endpoints.accounts,
        "api_url": endpoints.api,
        "upload_url": endpoints.upload,
    }
    if any(getattr(zoho, name) for name in hosts):
        for name, host in hosts.items():
            if getattr(zoho, name) is None:
                problems.append(
                    Problem(
                        f"zoho.{name}",
                        f"is not set while other Zoho hosts are: it stays at {host}",
                        Severity.WARNING,
                    )
                )
    return problems


# ---------------------------------------------------------------------------------------------
# Database checks (read-only)
# ---------------------------------------------------------------------------------------------

_TEXTS = frozenset({"text", "character varying", "character", "citext"})
_INTEGERS = frozenset({"smallint", "integer", "bigint"})
_FLOATS = frozenset({"real", "double precision"})
_TIMESTAMPS = frozenset({"timestamp without time zone", "timestamp with time zone"})
# Which PostgreSQL column types can feed each Zoho field type. Text fields take numbers and
# uuids rendered as text (the demo key is an integer feeding the text field parent_id);
# decimals take integers and numeric, exactly. Floats feed decimals with a warning: their
# binary rounding reaches Zoho as is. A timestamp does not feed a date field, nor text a date.
_ACCEPTED: dict[FieldType, frozenset[str]] = {
    FieldType.TEXT: _TEXTS | _INTEGERS | {"numeric", "uuid", "enum"},
    FieldType.MULTILINE: _TEXTS | _INTEGERS | {"numeric", "uuid", "enum"},
    FieldType.EMAIL: _TEXTS,
    FieldType.PICKLIST: _TEXTS | {"enum"},
    FieldType.INTEGER: _INTEGERS,
    FieldType.DECIMAL: _INTEGERS | {"numeric"},
    FieldType.CURRENCY: _INTEGERS | {"numeric"},
    FieldType.DATE: frozenset({"date"}),
    FieldType.DATETIME: _TIMESTAMPS,
    FieldType.BOOLEAN: frozenset({"boolean"}),
}
_TOLERATED: dict[FieldType, frozenset[str]] = {
    FieldType.DECIMAL: _FLOATS,
    FieldType.CURRENCY: _FLOATS,
}

_COLUMNS_SQL = """
SELECT c.column_name,
       CASE WHEN t.typtype = 'e' THEN 'enum'
            WHEN c.data_type = 'USER-DEFINED' THEN c.udt_name
            ELSE c.data_type END
FROM information_schema.columns AS c
LEFT JOIN pg_catalog.pg_namespace AS n ON n.nspname = c.udt_schema
LEFT JOIN pg_catalog.pg_type AS t ON t.typnamespace = n.oid AND t.typname = c.udt_name
WHERE c.table_schema = %s AND c.table_name = %s
ORDER BY c.ordinal_position
"""


def accepts_column_type(kind: FieldType, pg_type: str) -> bool:
    """Can a PostgreSQL column of ``pg_type`` feed a mapped field of ``kind``?"""
    return pg_type in _ACCEPTED[kind] or pg_type in _TOLERATED.get(kind, frozenset())


def table_columns(conn: Any, settings: Settings) -> list[tuple[str, str]]:
    """The source table's (column, type) pairs in table order (empty if there is no table)."""
    with conn.cursor() as cur:
        cur.execute(_COLUMNS_SQL, (settings.source.schema, settings.source.table))
        return [(str(name), str(kind)) for name, kind in cur.fetchall()]


def check_database(settings: Settings, connect_timeout: int = 5) -> list[Problem]:
    """Compare the configuration with the live legacy table; write nothing.

    Reports an unreachable database (``source.dsn``, never printing it), a missing schema or
    table, mapped columns the table lacks and column types a Zoho field type cannot carry.
    Runs in a read-only transaction that is rolled back.
    """
    source = settings.source
    try:
        conn = psycopg2.connect(
            source.dsn.reveal(),
            connect_timeout=connect_timeout,
            application_name="ordersync config check",
        )
    except psycopg2.ProgrammingError:
        return [Problem("source.dsn", "is not a valid PostgreSQL connection string")]
    except psycopg2.Error as exc:
        return [Problem("source.dsn", f"cannot connect to the database: {_scrub(exc, source.dsn)}")]
    try:
        conn.set_session(readonly=True)
        with conn.cursor() as cur:
            return _check_table(cur, settings)
    except psycopg2.Error as exc:
        return [Problem("source.table", f"cannot read the table: {_scrub(exc, source.dsn)}")]
    finally:
        conn.rollback()
        conn.close()


def _check_table(cur: Any, settings: Settings) -> list[Problem]:
    source = settings.source
    cur.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (source.schema,))
    if cur.fetchone() is None:
        return [Problem("source.schema", f"schema {source.schema!r} does not exist")]
    cur.execute(_COLUMNS_SQL, (source.schema, source.table))
    column_types: dict[str, str] = dict(cur.fetchall())
    if not column_types:
        return [Problem("source.table", f"table {source.schema}.{source.table} does not exist")]

    problems = []
    for i, spec in enumerate(settings.mapping.fields):
        pg_type = column_types.get(spec.column)
        if pg_type is None:
            problems.append(
                Problem(
                    f"mapping[{i}].column",
                    f"table {source.schema}.{source.table} has no column {spec.column!r}"
                    f"{_suggest(spec.column, column_types)}",
                )
            )
        elif pg_type in _TOLERATED.get(spec.type, ()):
            problems.append(
                Problem(
                    f"mapping[{i}].type",
                    f"column {spec.column!r} is {pg_type}: its binary rounding reaches the "
                    f"{spec.type} field {spec.api_name!r}; numeric is exact",
                    Severity.WARNING,
                )
            )
        elif pg_type not in _ACCEPTED[spec.type]:
            problems.append(
                Problem(
                    f"mapping[{i}].type",
                    f"column {spec.column!r} is {pg_type}, which cannot feed the {spec.type} field "
                    f"{spec.api_name!r} (accepted: {', '.join(sorted(_ACCEPTED[spec.type]))})",
                )
            )
    for name in ("synced_column", "version_column", "zoho_id_column"):
        column = getattr(source, name)
        if column not in column_types:
            problems.append(
                Problem(
                    f"source.{name}",
                    f"column {column!r} is not on {source.schema}.{source.table} yet: "
                    "run `ordersync db install`",
                    Severity.WARNING,
                )
            )
    if not any(p.severity is Severity.ERROR for p in problems):
        # prove we may read what we will extract
        query = sql.SQL("SELECT {} FROM {}.{} LIMIT 0").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in settings.mapping.columns),
            sql.Identifier(source.schema),
            sql.Identifier(source.table),
        )
        cur.execute(query)
    return problems


def _scrub(exc: Exception, dsn: Secret) -> str:
    """The first line of a driver error, with the DSN and its password masked."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    secrets = [dsn.reveal()]
    with contextlib.suppress(psycopg2.Error):
        secrets.append(psycopg2.extensions.parse_dsn(dsn.reveal()).get("password", ""))
    for secret in filter(None, secrets):
        text = text.replace(secret, MASK)
    return text


# ---------------------------------------------------------------------------------------------
# Showing settings
# ---------------------------------------------------------------------------------------------


def describe_settings(settings: Settings) -> dict[str, Any]:
    """The effective settings in the TOML layout, secrets masked: safe to print or log."""

    def plain(value: object) -> object:
        if isinstance(value, Secret):
            return str(value)
        if isinstance(value, str):
            return _mask_url_password(str(value))
        if isinstance(value, Path):
            return str(value)
        return value

    def section(obj: object, names: list[str]) -> dict[str, object]:
        return {name: plain(getattr(obj, name)) for name in names}

    return {
        "source": section(settings.source, [f.name for f in fields(SourceSettings)]),
        "zoho": section(settings.zoho, [f.name for f in fields(ZohoSettings)]),
        "sync": section(settings, _SYNC_KEYS),
        "mapping": [
            {
                "column": spec.column,
                "api_name": spec.api_name,
                "type": str(spec.type),
                **({"max_length": spec.max_length} if spec.max_length is not None else {}),
                **({"allowed": list(spec.allowed)} if spec.allowed else {}),
                "mandatory": spec.mandatory,
            }
            for spec in settings.mapping.fields
        ],
    }


def _mask_url_password(value: str) -> str:
    """``redis://:pw@host`` → ``redis://:********@host``; other strings unchanged."""
    scheme, sep, rest = value.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return value
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:{MASK}@{host}"


# ---------------------------------------------------------------------------------------------
# Reading helpers
# ---------------------------------------------------------------------------------------------

_SYNC_KEYS = [f.name for f in fields(Settings) if f.name not in _NOT_SYNC_KEYS]
_TOP_LEVEL = (*_SECTION_TYPES, "mapping")
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    Path: "a path string",
}
_BOOLEANS = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}


def _field_types(section: str) -> dict[str, Any]:
    hints = get_type_hints(_SECTION_TYPES[section])
    if section == "sync":
        return {name: hints[name] for name in _SYNC_KEYS}
    return {f.name: hints[f.name] for f in fields(_SECTION_TYPES[section])}


_FIELD_TYPES = {section: _field_types(section) for section in _SECTION_TYPES}


def _read_document(
    path: str | os.PathLike[str] | None, env: EnvMapping[str, str]
) -> dict[str, Any]:
    if path is None:
        path = env.get(CONFIG_ENV) or None
        if path is None and not Path(DEFAULT_CONFIG_FILE).is_file():
            return {}
        path = path or DEFAULT_CONFIG_FILE
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError("config", f"cannot read {os.fspath(path)}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{os.fspath(path)} is not valid TOML: {exc}") from None


def _env_sections(env: EnvMapping[str, str]) -> dict[str, dict[str, str]]:
    """``ORDERSYNC_<SECTION>_<KEY>`` variables by section; other ORDERSYNC_* names are not ours."""
    sections: dict[str, dict[str, str]] = {}
    for variable, value in env.items():
        if not variable.startswith(ENV_PREFIX):
            continue
        section, _, key = variable[len(ENV_PREFIX) :].partition("_")
        if section.lower() in _SECTION_TYPES and key:
            sections.setdefault(section.lower(), {})[key.lower()] = value
    return sections


def _section_values(section: str, raw: dict[str, Any], *, from_env: bool) -> dict[str, Any]:
    """Typed field values of one section from one layer (the TOML table or the environment)."""
    types = _FIELD_TYPES[section]
    secret_files = {f"{name}_file": name for name, kind in types.items() if kind is Secret}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{section}.{key}"
        where = f" (from {_env_name(section, key)})" if from_env else ""
        if key in secret_files:
            target = secret_files[key]
            if target in raw:
                raise ConfigError(dotted, f"give {section}.{target} or {dotted}, not both{where}")
            values[target] = _read_secret_file(dotted, value, where)
        elif key in types:
            values[key] = _convert(dotted, value, types[key], from_env, where)
        else:
            known = [*types, *secret_files]
            if from_env:
                close = _closest(key, known)
                hint = f"; did you mean {_env_name(section, close)}?" if close else ""
                raise ConfigError(dotted, f"unknown setting {_env_name(section, key)}{hint}")
            raise ConfigError(dotted, f"unknown key in [{section}]{_suggest(key, known)}")
    return values


def _env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section}_{key}".upper()


def _read_secret_file(key: str, value: object, where: str) -> Secret:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"expected a file path{where}")
    try:
        content = Path(value).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {value}: {exc.strerror}{where}") from None
    if not content:
        raise ConfigError(key, f"{value} is empty{where}")
    return Secret(content)


def _convert(key: str, value: object, kind: Any, from_env: bool, where: str) -> object:
    """Check (TOML) or parse (environment) one value into its field's type."""
    optional = get_origin(kind) in (Union, UnionType)
    if optional:
        kind = next(arg for arg in get_args(kind) if arg is not type(None))
    if from_env and isinstance(value, str):
        if optional and value == "":
            return None
        value = _parse_env_text(key, value, kind, where)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        expected = _TYPE_NAMES.get(kind, "a string")
        raise ConfigError(key, f"expected {expected}, got {_toml_type(value)}{where}")
    if kind is float:
        return float(value)  # type: ignore[arg-type]
    if kind in (Secret, Path):
        return kind(value)
    if isinstance(kind, type) and issubclass(kind, StrEnum):
        try:
            return kind(str(value))
        except ValueError:
            raise ConfigError(
                key, f"unknown value {value!r}; use one of {', '.join(kind)}{where}"
            ) from None
    return value


def _parse_env_text(key: str, text: str, kind: Any, where: str) -> object:
    try:
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise ConfigError(key, f"expected {_TYPE_NAMES[kind]}, got {text!r}{where}") from None
    if kind is bool:
        if text.lower() not in _BOOLEANS:
            raise ConfigError(key, f"expected true or false, got {text!r}{where}")
        return _BOOLEANS[text.lower()]
    return text


def _toml_type(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return next(
        (name for kind, name in names.items() if isinstance(value, kind)), type(value).__name__
    )


def _align_timezones(values: dict[str, dict[str, Any]]) -> None:
    """``org_timezone`` is one setting, written under [sync]; [zoho] follows it."""
    sync_tz, zoho_tz = values["sync"].get("org_timezone"), values["zoho"].get("org_timezone")
    if sync_tz is not None and zoho_tz is not None and sync_tz != zoho_tz:
        raise ConfigError(
            "zoho.org_timezone", f"differs from sync.org_timezone ({sync_tz!r}); set it once"
        )
    timezone = sync_tz or zoho_tz
    if timezone is not None:
        values["sync"]["org_timezone"] = values["zoho"]["org_timezone"] = timezone


def _mapping_from_toml(raw: object, key_column: str, unique_field: str) -> Mapping:
    if not isinstance(raw, list):
        raise ConfigError("mapping", "write each mapped column as a [[mapping]] table")
    specs = []
    for i, entry in enumerate(raw):
        key = f"mapping[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(key, "must be a [[mapping]] table")
        for name in entry:
            if name not in _MAPPING_KEYS:
                raise ConfigError(
                    f"{key}.{name}", f"unknown key in [[mapping]]{_suggest(name, _MAPPING_KEYS)}"
                )
        for name in ("column", "api_name", "type"):
            if name not in entry:
                raise ConfigError(f"{key}.{name}", "is required")
        for name, kind in (
            ("column", str),
            ("api_name", str),
            ("type", str),
            ("max_length", int),
            ("mandatory", bool),
        ):
            if name in entry:
                _convert(f"{key}.{name}", entry[name], kind, False, "")
        allowed = entry.get("allowed", [])
        if not isinstance(allowed, list) or not all(isinstance(v, str) for v in allowed):
            raise ConfigError(f"{key}.allowed", "expected an array of strings")
        try:
            field_type = FieldType(entry["type"])
        except ValueError:
            raise ConfigError(
                f"{key}.type",
                f"unknown type {entry['type']!r}{_suggest(entry['type'], _TYPE_VALUES)}"
                f" (types: {', '.join(_TYPE_VALUES)})",
            ) from None
        specs.append(
            FieldSpec(
                column=entry["column"],
                api_name=entry["api_name"],
                type=field_type,
                max_length=entry.get("max_length"),
                allowed=tuple(allowed),
                mandatory=entry.get("mandatory", False),
            )
        )
    return Mapping(fields=tuple(specs), key_column=key_column, unique_field=unique_field)


def _closest(name: str, known: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name, list(known), n=1)
    return close[0] if close else None


def _suggest(name: str, known: Iterable[str]) -> str:
    close = _closest(name, known)
    return f"; did you mean {close!r}?" if close else ""


def _require_at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(key, f"must be at least {low}, not {value}")


def _require_positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(key, f"must be greater than 0, not {value}")


def _check_timezone(key: str, name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            key, f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin"
        ) from None
