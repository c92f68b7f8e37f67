"""Records of one module: storage, unique indexes, and Zoho's upsert semantics (§6.2)."""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterator, MutableMapping, ValuesView
from itertools import repeat
from typing import Any, cast

from zohosim.schema import FieldError, Module

SIM_USER = {"name": "Patricia Boyle", "id": "5725767000000225013"}
SIM_USER_EMAIL = "patricia.boyle@zohosim.example"
RECORD_USER = {**SIM_USER, "email": SIM_USER_EMAIL}
# the keys an insert adds after the values, in its order (RecordStore.insert, insert_columns)
INSERT_KEYS = ("id", "Owner", "Created_By", "Modified_By", "Created_Time", "Modified_Time")


def norm_key(value: Any) -> str:
    """Index key of a unique value: Zoho's unique fields are case-insensitive by default."""
    return value.casefold() if isinstance(value, str) else str(value)


class Segment:
    """Records inserted together, kept as columns until read (:class:`Records`): ``keys`` name
    ``columns`` (None: no value), then every record has the items of ``tail``."""

    __slots__ = ("ids", "keys", "columns", "tail")

    def __init__(self, ids: list[str], keys: list[str], columns: list[list[Any]],
                 tail: dict[str, Any]) -> None:
        self.ids, self.keys, self.columns, self.tail = ids, keys, columns, tail

    def records(self) -> list[dict[str, Any]]:
        """Each id's record as :meth:`RecordStore.insert` would have made it, in one pass."""
        keys = [*self.keys, *self.tail]
        rows = zip(*self.columns, *map(repeat, self.tail.values()), strict=False)
        records = list(map(dict, map(zip, repeat(keys), rows)))
        for name, col in zip(self.keys, self.columns, strict=True):
            if None in col:  # an empty cell is no value
                for k in [k for k, v in enumerate(col) if v is None]:
                    del records[k][name]
        return records


class Records(MutableMapping[str, dict[str, Any]]):
    """Record id -> record, in insertion order: a dict, except that records inserted in bulk
    (:meth:`add_columns`) are kept as their columns and made into their dict when first read,
    which is then the record (mutated in place by updates, as any other)."""

    def __init__(self) -> None:
        self._d: dict[str, Any] = {}  # a record dict, or the Segment that holds it

    def add_columns(self, ids: list[str], keys: list[str], columns: list[list[Any]],
                    tail: dict[str, Any]) -> None:
        """Records ``ids``: ``keys`` -> the value in ``columns`` (None: none), then ``tail``."""
        self._d.update(zip(ids, repeat(Segment(ids, keys, columns, tail))))

    def _made(self, rid: str, segment: Segment) -> dict[str, Any]:
        """Record ``rid``, and every other record of its segment not deleted since, made."""
        d = self._d
        for i, record in zip(segment.ids, segment.records(), strict=True):
            if d.get(i) is segment:
                d[i] = record
        return d[rid]  # type: ignore[no-any-return]

    def __getitem__(self, rid: str) -> dict[str, Any]:
        held = self._d[rid]
        return held if type(held) is dict else self._made(rid, held)

    def get(self, rid: str, default: Any = None) -> Any:  # type: ignore[override]
        held = self._d.get(rid)
        if held is None:
            return default
        return held if type(held) is dict else self._made(rid, held)

    def __setitem__(self, rid: str, record: dict[str, Any]) -> None:
        self._d[rid] = record

    def __delitem__(self, rid: str) -> None:
        del self._d[rid]

    def __contains__(self, rid: object) -> bool:
        return rid in self._d

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def clear(self) -> None:
        self._d.clear()

    def _all(self) -> dict[str, dict[str, Any]]:
        """Every record made into its dict."""
        d = self._d
        for rid in [rid for rid, held in d.items() if type(held) is not dict]:
            if type(d[rid]) is not dict:
                self._made(rid, d[rid])
        return d

    def values(self) -> ValuesView[dict[str, Any]]:  # type: ignore[override]
        return self._all().values()

    def items(self) -> ItemsView[str, dict[str, Any]]:  # type: ignore[override]
        return self._all().items()


class RecordStore:
    """Every record of one module, with an index per unique / duplicate-check field."""

    def __init__(self, module: Module) -> None:
        self.module = module
        self.records = Records()
        self.unique = list(module.unique_fields)
        self.indexed = list(self.unique)
        if module.system_duplicate_field and module.system_duplicate_field not in self.indexed:
            self.indexed.append(module.system_duplicate_field)
        self.index: dict[str, dict[str, str]] = {f: {} for f in self.indexed}

    def clear(self) -> None:
        self.records.clear()
        for idx in self.index.values():
            idx.clear()

    def load(self, record: dict[str, Any]) -> None:
        self.records[record["id"]] = record
        self._index_add(record)

    def _index_add(self, record: dict[str, Any]) -> None:
        rid = record["id"]
        for f, idx in self.index.items():
            v = record.get(f)
            if v is not None:
                idx.setdefault(v.casefold() if type(v) is str else str(v), rid)

    def _unindex(self, f: str, record: dict[str, Any]) -> None:
        v = record.get(f)
        if v is None:
            return
        k = norm_key(v)
        if self.index[f].get(k) != record["id"]:
            return
        del self.index[f][k]
        if not self.module.fields[f].unique:
            # a non-unique duplicate-check field (Name) may have another holder of the value
            for other in self.records.values():
                if other["id"] != record["id"] and other.get(f) is not None \
                        and norm_key(other[f]) == k:
                    self.index[f][k] = other["id"]
                    break

    def lookup(self, field: str, value: Any) -> str | None:
        """Id of the record holding ``value`` in ``field`` (``id`` looks up by record id)."""
        if value is None:
            return None
        if field == "id":
            return str(value) if str(value) in self.records else None
        idx = self.index.get(field)
        if idx is None:
            for r in self.records.values():
                if r.get(field) is not None and norm_key(r[field]) == norm_key(value):
                    return str(r["id"])
            return None
        return idx.get(norm_key(value))

    def unique_conflicts(self, values: dict[str, Any], exclude: str | None,
                         fields: list[str] | None = None) -> list[tuple[str, str]]:
        """User-unique fields of ``values`` already held by another record: (field, other id).

        ``fields``: only these of the unique fields (default: all).
        """
        out = []
        for f in self.unique if fields is None else fields:
            v = values.get(f)
            if v is None:
                continue
            other = self.index[f].get(norm_key(v))
            if other is not None and other != exclude:
                out.append((f, other))
        return out

    def insert(self, rid: str, values: dict[str, Any], now: str) -> dict[str, Any]:
        # ``values`` becomes the record (every caller hands over a dict of its own)
        record = ({k: v for k, v in values.items() if v is not None}
                  if None in values.values() else values)
        record["id"] = rid
        # one shared, never-mutated user object (records are copied before they are answered)
        record["Owner"] = record["Created_By"] = record["Modified_By"] = RECORD_USER
        record["Created_Time"] = now
        record["Modified_Time"] = now
        self.records[rid] = record
        self._index_add(record)
        return record

    def insert_columns(self, ids: list[str], names: list[str], columns: list[list[Any]],
                       index_keys: list[tuple[str, list[str | None]]], now: str) -> None:
        """:meth:`insert` of one record per id, its values given column by column (None: no
        value), in one pass; ``index_keys``: the :func:`norm_key` per row of each indexed
        field among ``names``. The caller has checked that no key of a unique field is held
        already or twice (:meth:`Prepared.inserts_only`): those go into their index as they are.

        The records are kept as the columns (:class:`Records`) and made into dicts when read.
        """
        user = RECORD_USER
        self.records.add_columns(ids, [*names, "id"], [*columns, ids], dict(zip(
            INSERT_KEYS[1:], (user, user, user, now, now), strict=True)))
        for f, norm in index_keys:
            keys = cast(list[str], norm)  # None: no value, no key
            idx = self.index[f]
            if None not in norm and self.module.fields[f].unique:
                idx.update(zip(keys, ids, strict=True))
                continue
            new = dict(zip(keys, ids, strict=True))
            new.pop(None, None)  # type: ignore[call-overload]
            if len(new) < len(ids) - norm.count(None):  # a key twice: its first row holds it
                new = {}
                for key, rid in zip(keys, ids, strict=True):
                    if key is not None:
                        new.setdefault(key, rid)
            for key in new.keys() & idx.keys():  # a key held already keeps its holder
                del new[key]
            idx.update(new)

    def update(self, rid: str, values: dict[str, Any], now: str) -> dict[str, Any]:
        record = self.records[rid]
        changed = [f for f in self.indexed if f in values and record.get(f) != values[f]]
        for f in changed:
            self._unindex(f, record)
        for k, v in values.items():
            if v is None:
                record.pop(k, None)
            else:
                record[k] = v
        record["Modified_Time"] = now
        for f in changed:
            v = record.get(f)
            if v is not None:
                self.index[f].setdefault(norm_key(v), rid)
        return record


def record_error(code: str, api_name: str, json_path: str, extra: dict[str, Any] | None = None,
                 message: str | None = None) -> dict[str, Any]:
    """One per-record error item (§6.4)."""
    messages = {
        "INVALID_DATA": "invalid data",
        "MANDATORY_NOT_FOUND": "required field not found",
        "DUPLICATE_DATA": "duplicate data",
    }
    details: dict[str, Any] = dict(extra or {})
    details["api_name"] = api_name
    details["json_path"] = json_path
    return {
        "code": code,
        "details": details,
        "message": message or messages.get(code, code.lower().replace("_", " ")),
        "status": "error",
    }


def duplicate_details(module: Module, other_id: str) -> dict[str, Any]:
    return {
        "duplicate_record": {
            "id": other_id,
            "Owner": {"name": SIM_USER["name"], "id": SIM_USER["id"], "zuid": "74822956"},
            "module": {"api_name": module.api_name, "id": module.id},
        },
        "more_records": False,
    }


def check_order(module: Module, duplicate_check_fields: list[str] | None) -> list[str]:
    """The fields an upsert matches on, in order (§6.2)."""
    uniques = module.unique_fields
    if duplicate_check_fields:
        order = list(duplicate_check_fields)
        return order + [f for f in uniques if f not in order]
    sysf = [module.system_duplicate_field] if module.system_duplicate_field else []
    return sysf + [f for f in uniques if f not in sysf]


def upsert_one(
    store: RecordStore,
    index: int,
    item: Any,
    order: list[str],
    new_id: Callable[[], str],
    now: str,
) -> dict[str, Any]:
    """Apply one upsert record; return its result item (§6.3 / §6.4)."""
    module = store.module
    if not isinstance(item, dict):
        return record_error("INVALID_DATA", "data", f"$.data[{index}]",
                            {"expected_data_type": "jsonobject"})
    values: dict[str, Any] = {}
    for key, raw in item.items():
        fld = module.writable(key)
        if fld is None:
            continue
        try:
            values[key] = fld.from_json(raw)
        except FieldError as e:
            return record_error(e.code, key, f"$.data[{index}].{key}", e.extra)
    target: str | None = None
    dup_field: str | None = None
    for f in order:
        v = values.get(f)
        if v is not None:
            target = store.lookup(f, v)
            if target is not None:
                dup_field = f
                break
    for m in module.mandatory_fields:
        if (target is None and values.get(m) is None) or (m in values and values[m] is None):
            return record_error("MANDATORY_NOT_FOUND", m, f"$.data[{index}].{m}")
    conflicts = store.unique_conflicts(values, exclude=target)
    if conflicts:
        name, other = conflicts[0]
        return record_error("DUPLICATE_DATA", name, f"$.data[{index}].{name}",
                            duplicate_details(module, other))
    if target is None:
        record = store.insert(new_id(), values, now)
        action, message = "insert", "record added"
    else:
        record = store.update(target, values, now)
        action, message = "update", "record updated"
    return {
        "code": "SUCCESS",
        "duplicate_field": dup_field,
        "action": action,
        "details": {
            "Modified_Time": record["Modified_Time"],
            "Modified_By": dict(SIM_USER),
            "Created_Time": record["Created_Time"],
            "id": record["id"],
            "Created_By": dict(SIM_USER),
        },
        "message": message,
        "status": "success",
    }
