"""Reading settings: ``ordersync.toml`` and ``ORDERSYNC_*`` into one validated ``Settings``.

``load_settings`` parses, converts and validates (``validate_settings``, ``validate_mapping``);
a bad value raises ``ConfigError`` naming the key and where it came from.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import zoneinfo
from collections.abc import Iterable
from collections.abc import Mapping as EnvMapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import psycopg2
import psycopg2.extensions

from pipeline.credentials import PLACEHOLDER
from pipeline.mapping import FieldSpec, FieldType, Mapping
from pipeline.secret import Secret
from pipeline.settings.model import (
    DEFAULT_MAPPING,
    MAX_BATCH_SIZE,
    Settings,
    SourceSettings,
    SyncMode,
)
from pipeline.zoho.config import ZohoSettings
from pipeline.zoho.endpoints import DATA_CENTRES
from pipeline.zoho.limits import (
    BULK_MAX_COLUMNS,
    MULTILINE_MAX_LENGTH,
    TEXT_MAX_LENGTH,
    UPSERT_MAX_RECORDS,
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
    try:
        psycopg2.extensions.parse_dsn(source.dsn.reveal())
    except psycopg2.Error as exc:
        raise dsn_error(exc) from None
    refuse_placeholders(settings)

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
    _require_at_least("sync.realtime_min_batch", settings.realtime_min_batch, 1)
    if settings.realtime_min_batch > UPSERT_MAX_RECORDS:
        raise ConfigError(
            "sync.realtime_min_batch",
            f"must be at most {UPSERT_MAX_RECORDS} (one upsert call), not"
            f" {settings.realtime_min_batch}",
        )
    _require_at_least("sync.max_attempts", settings.max_attempts, 1)
    _require_at_least("sync.max_deletes", settings.max_deletes, 0)
    _require_positive("sync.deletes_every", settings.deletes_every)
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


_QUOTED = re.compile(r'"[^"]*"')


def dsn_error(exc: psycopg2.Error) -> ConfigError:
    """``source.dsn`` does not parse: libpq's reason without the part it quotes (with a bare
    ``%`` in a URL's password, that part is the password)."""
    text = str(exc).strip()
    reason = _QUOTED.sub("(not shown)", text.splitlines()[0] if text else type(exc).__name__)
    hint = "; a % in a password is written %25" if "percent" in reason else ""
    return ConfigError("source.dsn", f"is not a valid PostgreSQL connection string: {reason}{hint}")


def refuse_placeholders(settings: Settings) -> None:
    """Raise ``ConfigError`` for a credential still holding the env template's ``CHANGE_ME``
    (deploy/ordersync.env.example): no process starts on a default credential."""
    values = {  # (sync.metrics_token: the web process applies pipeline.credentials' rule)
        "source.dsn": settings.source.dsn.reveal(),
        "zoho.client_id": settings.zoho.client_id,
        "zoho.client_secret": settings.zoho.client_secret.reveal(),
        "zoho.refresh_token": settings.zoho.refresh_token.reveal(),
    }
    for key, value in values.items():
        if value and PLACEHOLDER.lower() in value.lower():
            section, name = key.split(".")
            raise ConfigError(
                key,
                f"still holds the env template's placeholder ({PLACEHOLDER}…, e.g. in"
                f" {_env_name(section, name)}): replace it with the real value",
            )


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
