"""Quoted SQL names of everything ordersync adds to the legacy database, from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from pipeline.settings import Settings

# When the row last became pending (set by the change triggers; read by near-real-time mode).
PENDING_SINCE_COLUMN = "sync_pending_since"


@dataclass(frozen=True)
class Names:
    """SQL identifiers for one configured source (legacy table + ledger schema)."""

    settings: Settings

    @property
    def table(self) -> sql.Identifier:
        s = self.settings.source
        return sql.Identifier(s.schema, s.table)

    @property
    def qualified_table(self) -> str:
        """``schema.table`` as text, for ``to_regclass`` (identifiers double-quoted)."""
        s = self.settings.source
        schema, table = (name.replace('"', '""') for name in (s.schema, s.table))
        return f'"{schema}"."{table}"'

    @property
    def key(self) -> sql.Identifier:
        return sql.Identifier(self.settings.source.key_column)

    @property
    def synced(self) -> sql.Identifier:
        return sql.Identifier(self.settings.source.synced_column)

    @property
    def version(self) -> sql.Identifier:
        return sql.Identifier(self.settings.source.version_column)

    @property
    def zoho_id(self) -> sql.Identifier:
        return sql.Identifier(self.settings.source.zoho_id_column)

    @property
    def pending_since(self) -> sql.Identifier:
        return sql.Identifier(PENDING_SINCE_COLUMN)

    @property
    def ledger(self) -> sql.Identifier:
        return sql.Identifier(self.settings.source.ledger_schema)

    def ledger_table(self, name: str) -> sql.Identifier:
        """A table of our ledger schema."""
        return sql.Identifier(self.settings.source.ledger_schema, name)

    # Names of objects on the legacy table, derived from its name (at most 63 bytes).
    def _derived(self, suffix: str) -> str:
        return f"{self.settings.source.table[: 63 - len(suffix)]}{suffix}"

    @property
    def pending_index_name(self) -> str:
        return self._derived("_ordersync_pending")

    @property
    def insert_trigger_name(self) -> str:
        return self._derived("_ordersync_ins")

    @property
    def update_trigger_name(self) -> str:
        return self._derived("_ordersync_upd")

    @property
    def delete_trigger_name(self) -> str:
        return self._derived("_ordersync_del")

    @property
    def notify_channel(self) -> str:
        """The channel the change trigger notifies (``sync.notify``): one per ledger schema, so
        two installs in one database never wake each other."""
        return f"{self.settings.source.ledger_schema[:54]}_pending"

    @property
    def delete_function(self) -> sql.Identifier:
        return self.ledger_table(self._derived("_tombstone_on_delete"))

    @property
    def insert_function(self) -> sql.Identifier:
        return self.ledger_table(self._derived("_pending_on_insert"))

    @property
    def update_function(self) -> sql.Identifier:
        return self.ledger_table(self._derived("_pending_on_update"))


def key_type(conn: Connection, settings: Settings) -> sql.Composable:
    """The SQL type of the legacy key column (claims store keys as text and cast back)."""
    key = column_info(conn, settings).get(settings.source.key_column)
    if key is None:
        raise LookupError(
            f"{Names(settings).qualified_table} has no key column {settings.source.key_column!r}"
        )
    return sql.SQL(key.sql_type)


@dataclass(frozen=True)
class ColumnInfo:
    """What the catalog says of one legacy column: its type's name (``integer``, ``numeric``,
    ``character varying``…), ``precision``/``scale`` of a constrained numeric, ``length`` of a
    constrained varchar or char, whether it is ``NOT NULL``, and its full SQL type
    (``format_type``: ``numeric(12,2)``), which casts to it."""

    type_name: str
    not_null: bool
    precision: int | None = None
    scale: int | None = None
    length: int | None = None
    sql_type: str = ""


def column_info(conn: Connection, settings: Settings) -> dict[str, ColumnInfo]:
    """The legacy table's columns as the catalog has them now (one query, no cache: a column
    altered between two claims is read as it is)."""
    names = Names(settings)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT a.attname, t.typname, a.atttypid::regtype::text, a.atttypmod, a.attnotnull,"
            " format_type(a.atttypid, a.atttypmod)"
            " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
            " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
            (names.qualified_table,),
        )
        rows = cur.fetchall()
    found: dict[str, ColumnInfo] = {}
    for name, typname, regtype, typmod, not_null, sql_type in rows:
        precision = scale = length = None
        if typname == "numeric" and typmod >= 4:
            raw_scale = (typmod - 4) & 0x7FF  # 11 bits, signed (PostgreSQL 15 allows < 0)
            precision = ((typmod - 4) >> 16) & 0xFFFF
            scale = raw_scale - 0x800 if raw_scale & 0x400 else raw_scale
        elif typname in ("varchar", "bpchar") and typmod >= 4:
            length = typmod - 4
        found[name] = ColumnInfo(regtype, bool(not_null), precision, scale, length, sql_type)
    return found
