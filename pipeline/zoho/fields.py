"""What the Zoho module will accept: its field metadata, read once in a while and cached.

``GET /crm/v8/settings/fields?module=…`` (1 credit) lists each field's API name, data type,
length, ``system_mandatory``, ``read_only``, ``unique``, picklist values and decimals. The
checks (``config check``, the dry run, the start of a run: :mod:`pipeline.mapping_check`) read
it through :func:`module_fields`, which keeps the parsed answer in Redis and asks Zoho again
once it is ``FIELDS_TTL`` old. Workers only read the cached copy (:func:`cached_fields`), so a
claim never pays for metadata; :func:`forget` drops it when a refusal suggests it changed (a
row our rules passed was refused for its data).

:func:`derive_mapping` turns the configured mapping into the one the row rules check: Zoho's
lengths, mandatory fields and picklist values, which the configuration can only tighten.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from pipeline.mapping import FieldSpec, FieldType, Mapping
from pipeline.zoho.limits import DEFAULT_CALL_CREDITS

log = logging.getLogger(__name__)

FIELDS_TTL = 3600  # seconds a module's field metadata is trusted (1 credit to read again)
# Zoho data types Bulk Write cannot set (computed, or a record id of another module).
UNSETTABLE_TYPES = frozenset({"formula", "autonumber", "lookup", "ownerlookup", "rollup_summary"})
# Which Zoho data types each mapped field type may feed.
COMPATIBLE: dict[FieldType, frozenset[str]] = {
    FieldType.TEXT: frozenset({"text", "textarea", "phone", "website"}),
    FieldType.MULTILINE: frozenset({"textarea", "text"}),
    FieldType.EMAIL: frozenset({"email", "text"}),
    FieldType.PICKLIST: frozenset({"picklist", "text"}),
    FieldType.INTEGER: frozenset({"integer", "bigint", "double", "decimal", "currency", "text"}),
    FieldType.DECIMAL: frozenset({"double", "decimal", "currency", "text"}),
    FieldType.CURRENCY: frozenset({"currency", "double", "decimal"}),
    FieldType.DATE: frozenset({"date", "text"}),
    FieldType.DATETIME: frozenset({"datetime", "text"}),
    FieldType.BOOLEAN: frozenset({"boolean", "text"}),
}
_NONE = "-None-"  # Zoho lists it first in every picklist: it means "no value"


@dataclass(frozen=True)
class ZohoField:
    """One field of the module as Zoho describes it."""

    api_name: str
    data_type: str
    length: int | None = None
    mandatory: bool = False
    read_only: bool = False
    unique: bool = False
    picklist: tuple[str, ...] = ()
    restricted: bool | None = None  # picklist only: None when Zoho does not say
    decimal_place: int | None = None

    @property
    def settable(self) -> bool:
        """Can Bulk Write and Upsert set it?"""
        return not self.read_only and self.data_type not in UNSETTABLE_TYPES

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the Redis cache holds these)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def parse_fields(items: list[dict[str, Any]]) -> dict[str, ZohoField]:
    """Zoho's ``fields`` array, by API name."""
    out: dict[str, ZohoField] = {}
    for item in items:
        name = str(item.get("api_name") or "")
        if not name:
            continue
        picks = tuple(
            str(p.get("actual_value") or p.get("display_value"))
            for p in item.get("pick_list_values") or []
            if (p.get("actual_value") or p.get("display_value")) not in (None, _NONE)
        )
        restricted = item.get("restricted")
        if isinstance(restricted, dict):  # some answers nest it: {"picklist": true}
            restricted = restricted.get("picklist")
        length = item.get("length")
        out[name] = ZohoField(
            api_name=name,
            data_type=str(item.get("data_type") or ""),
            length=int(length) if isinstance(length, int) else None,
            mandatory=bool(item.get("system_mandatory")),
            read_only=bool(item.get("read_only") or item.get("field_read_only")),
            unique=bool(item.get("unique")),
            picklist=picks,
            restricted=None if restricted is None else bool(restricted),
            decimal_place=item.get("decimal_place"),
        )
    return out


def _cache_key(prefix: str, module: str) -> str:
    return f"{prefix}:fields:{module}"


def module_fields(client: Any, *, max_age: float = FIELDS_TTL) -> dict[str, ZohoField]:
    """The module's fields: the cached copy if younger than ``max_age`` seconds, else one GET
    (1 credit), cached for every process."""
    key = _cache_key(client.settings.redis_prefix, client.settings.module)
    cached = _read(client.redis, key)
    if cached is not None and time.time() - cached[0] < max_age:
        return cached[1]
    fields = parse_fields(client.fields())
    document = {"at": time.time(), "fields": {n: f.as_dict() for n, f in fields.items()}}
    client.redis.set(key, json.dumps(document))
    return fields


def read_cost(client: Any, *, max_age: float = FIELDS_TTL) -> int:
    """Credits :func:`module_fields` will spend now: 0 with a cached copy younger than
    ``max_age``, else the GET's 1 credit (what a check says it will cost, before it runs)."""
    cached = _read(client.redis, _cache_key(client.settings.redis_prefix, client.settings.module))
    return 0 if cached is not None and time.time() - cached[0] < max_age else DEFAULT_CALL_CREDITS


def cached_fields(redis: Any, prefix: str, module: str) -> dict[str, ZohoField] | None:
    """The cached metadata, however old (workers use it, never paying for a GET); None if
    there is none (the rules then come from the configuration alone)."""
    cached = _read(redis, _cache_key(prefix, module))
    return None if cached is None else cached[1]


def _read(redis: Any, key: str) -> tuple[float, dict[str, ZohoField]] | None:
    raw = redis.get(key)
    if not raw:
        return None
    document = json.loads(raw)
    return float(document["at"]), {
        name: ZohoField(**{**f, "picklist": tuple(f["picklist"])})
        for name, f in document["fields"].items()
    }


def mark_stale(client: Any) -> None:
    """Zoho refused rows our rules passed, for their data: the metadata may have changed. The
    next check reads it again; workers keep the cached copy meanwhile."""
    key = _cache_key(client.settings.redis_prefix, client.settings.module)
    raw = client.redis.get(key)
    if raw:
        document = json.loads(raw)
        if document.get("at"):
            document["at"] = 0
            client.redis.set(key, json.dumps(document))
            log.info("field metadata of %s marked stale after a refusal", client.settings.module)


def refused_for_data(codes_seen: Any) -> bool:
    """Do these row codes suggest the module's fields changed (not ours, permanent)?"""
    return any(c in ("INVALID_DATA", "MANDATORY_NOT_FOUND") for c in codes_seen)


def forget(redis: Any, prefix: str, module: str) -> None:
    """Drop the cached metadata (a refusal suggests it changed): the next check asks Zoho."""
    redis.delete(_cache_key(prefix, module))


def derive_spec(spec: FieldSpec, field: ZohoField | None) -> FieldSpec:
    """The rules for one mapped field: Zoho's, tightened by the configuration, never loosened.

    Length: the smaller of the two. Mandatory: either says so. Picklist values: Zoho's (for a
    picklist Zoho restricts or does not say), narrowed to the configured ones when both list
    some.
    """
    if field is None:
        return spec
    max_length = spec.max_length
    if field.length is not None and spec.type in (
        FieldType.TEXT, FieldType.MULTILINE, FieldType.EMAIL, FieldType.PICKLIST
    ):  # fmt: skip
        max_length = field.length if max_length is None else min(max_length, field.length)
    allowed = spec.allowed
    if spec.type is FieldType.PICKLIST and field.picklist and field.restricted is not False:
        allowed = (
            tuple(v for v in spec.allowed if v in field.picklist)
            if spec.allowed
            else field.picklist
        )
    return replace(
        spec, max_length=max_length, mandatory=spec.mandatory or field.mandatory, allowed=allowed
    )


def derive_mapping(mapping: Mapping, fields: dict[str, ZohoField]) -> Mapping:
    """The mapping whose row rules are Zoho's, tightened by the configuration."""
    return replace(
        mapping, fields=tuple(derive_spec(s, fields.get(s.api_name)) for s in mapping.fields)
    )
