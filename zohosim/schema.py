"""Module schema: field definitions, Zoho-shaped field metadata, and per-type validation.

A schema file is JSON, ``{"modules": [{"api_name", "id", "system_duplicate_field",
"fields": [...]}]}``, where each field has ``api_name``, ``field_label``, ``data_type``
and optionally ``length``, ``system_mandatory``, ``unique``, ``restricted``,
``pick_list_values``, ``decimal_place``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from functools import lru_cache
from importlib import resources
from itertools import repeat
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

TEXT_TYPES = {"text", "textarea", "email", "phone", "website", "picklist"}
DEFAULT_LENGTH = {
    "text": 255,
    "textarea": 32000,
    "email": 100,
    "phone": 30,
    "website": 255,
    "picklist": 120,
    "currency": 16,
    "double": 16,
    "integer": 9,
    "bigint": 18,
}
JSON_TYPE = {
    "ownerlookup": "jsonobject",
    "integer": "integer",
    "bigint": "string",
    "currency": "double",
    "double": "double",
    "boolean": "boolean",
}
UI_TYPE = {
    "text": 1,
    "textarea": 3,
    "email": 25,
    "phone": 33,
    "website": 21,
    "picklist": 2,
    "currency": 36,
    "double": 38,
    "integer": 32,
    "bigint": 108,
    "date": 24,
    "datetime": 333,
    "boolean": 301,
    "ownerlookup": 8,
}
EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+'\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DATETIME_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:[+-]\d{2}:\d{2}|Z)$"
)
NUMBER_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)$")
INT_RE = re.compile(r"^[+-]?\d+$")
# a datetime cell the converter hands back unchanged when no output time zone is set
PLAIN_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}")
PLAIN_UTC_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00")
MEMO_SIZE = 4096  # remembered cell values per converter (integers, dates)
ISO_DATE_PATTERNS = {"yyyy-MM-dd"}
ISO_DATETIME_PATTERNS = {
    "yyyy-MM-dd'T'HH:mm:ssXXX",
    "yyyy-MM-dd'T'HH:mm:ssZ",
    "yyyy-MM-dd'T'HH:mm:ssX",
    "yyyy-MM-dd'T'HH:mm:ss.SSSXXX",
}


class FieldError(Exception):
    """A value a field refuses: ``code`` is Zoho's error code, ``extra`` the details keys."""

    def __init__(self, code: str, api_name: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(code, api_name, extra)
        self.code = code
        self.api_name = api_name
        self.extra = extra or {}


def _invalid(f: Field) -> FieldError:
    return FieldError("INVALID_DATA", f.api_name, {"expected_data_type": f.data_type})


@lru_cache(maxsize=256)
def compile_java_pattern(pattern: str) -> tuple[str, bool, bool]:
    """Translate a Java date pattern to a ``strptime`` format.

    Returns (format, has_date, has_time); raises ValueError for what we do not understand.
    """
    tokens = [
        ("yyyy", "%Y"), ("yy", "%y"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"), ("hh", "%I"),
        ("mm", "%M"), ("ss", "%S"), ("SSS", "%f"), ("XXX", "%z"), ("XX", "%z"), ("X", "%z"),
        ("ZZ", "%z"), ("Z", "%z"), ("a", "%p"),
    ]
    out: list[str] = []
    seen: set[str] = set()
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "'":
            end = pattern.find("'", i + 1)
            if end < 0:
                raise ValueError(f"unterminated quote in {pattern!r}")
            out.append(pattern[i + 1 : end].replace("%", "%%") or "'")
            i = end + 1
            continue
        for tok, fmt in tokens:
            if pattern.startswith(tok, i):
                out.append(fmt)
                seen.add(tok[0])
                i += len(tok)
                break
        else:
            if ch.isalpha():
                raise ValueError(f"unsupported pattern letter {ch!r} in {pattern!r}")
            out.append(ch.replace("%", "%%"))
            i += 1
    has_date = {"y", "M", "d"} <= seen
    has_time = {"H", "m"} <= seen or {"h", "m", "a"} <= seen
    return "".join(out), has_date, has_time


def check_format(data_type: str, pattern: str) -> bool:
    """Is ``pattern`` an acceptable bulk-write ``format`` for a field of this type?"""
    if data_type not in ("date", "datetime"):
        return isinstance(pattern, str)
    try:
        _fmt, has_date, has_time = compile_java_pattern(pattern)
    except ValueError:
        return False
    if data_type == "date":
        return has_date and not has_time
    return has_date and has_time


# The time zone datetimes are stored and answered in (Zoho answers in the user's time zone);
# None keeps the offset each value was sent with. Set by the server's ``time_zone`` config.
_OUTPUT_TZ: list[tzinfo | None] = [UTC]


def set_time_zone(name: str) -> None:
    """``""`` keeps offsets as sent; otherwise an IANA name such as ``UTC`` or ``Asia/Kolkata``."""
    if not name:
        _OUTPUT_TZ[0] = None
    elif name == "UTC":
        _OUTPUT_TZ[0] = UTC
    else:
        try:
            _OUTPUT_TZ[0] = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {name!r}") from exc


def format_datetime(dt: datetime) -> str:
    """A datetime as Zoho answers it: ISO-8601 to the second, in the org's time zone."""
    return _iso_datetime(dt)


def _iso_datetime(dt: datetime) -> str:
    tz = _OUTPUT_TZ[0]
    if dt.tzinfo is None:  # a CSV datetime without offset is in the org's time zone
        dt = dt.replace(tzinfo=tz or UTC)
    elif tz is not None:
        dt = dt.astimezone(tz)
    return (dt.replace(microsecond=0) if dt.microsecond else dt).isoformat()


@dataclass
class Field:
    """One field of a module."""

    api_name: str
    field_label: str
    data_type: str
    id: str
    length: int | None = None
    system_mandatory: bool = False
    unique: bool = False
    restricted: bool = False
    pick_list_values: tuple[str, ...] = ()
    decimal_place: int | None = None
    custom_field: bool = True
    read_only: bool = False
    sequence: int = 0

    # ---- validation -------------------------------------------------------------------
    def from_json(self, value: Any) -> Any:
        """Validate a records-API JSON value; return the stored form (None clears)."""
        if value is None or value == "":
            return None
        t = self.data_type
        if t in TEXT_TYPES:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise _invalid(self)
            return self._text(str(value))
        if t == "boolean":
            if not isinstance(value, bool):
                raise _invalid(self)
            return value
        if t in ("integer", "bigint"):
            if isinstance(value, bool):
                raise _invalid(self)
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, int):
                return self._int(str(value))
            if isinstance(value, str) and INT_RE.match(value.strip()):
                return self._int(value.strip())
            raise _invalid(self)
        if t in ("currency", "double"):
            if isinstance(value, bool):
                raise _invalid(self)
            if isinstance(value, (int, float)):
                return self._number(str(value))
            if isinstance(value, str) and NUMBER_RE.match(value.strip()):
                return self._number(value.strip())
            raise _invalid(self)
        if t == "date":
            if not isinstance(value, str) or not DATE_RE.match(value):
                raise _invalid(self)
            try:
                return date.fromisoformat(value).isoformat()
            except ValueError:
                raise _invalid(self) from None
        if t == "datetime":
            if not isinstance(value, str) or not DATETIME_RE.match(value):
                raise _invalid(self)
            try:
                return _iso_datetime(datetime.fromisoformat(value))
            except ValueError:
                raise _invalid(self) from None
        return value

    def from_csv(self, cell: str, fmt: str | None = None) -> Any:
        """Validate a non-empty bulk-write CSV cell (with the mapping's ``format``)."""
        return self.csv_converter(fmt)(cell)

    def csv_converter(self, fmt: str | None = None) -> Callable[[str], Any]:
        """A fast cell -> value function for this field and ``format`` (raises FieldError)."""
        return self._cached("_converters", fmt, self._make_converter)  # type: ignore[no-any-return]

    def csv_column(self, fmt: str | None = None) -> Callable[[list[str]], list[Any] | None]:
        """The bulk form of :meth:`csv_converter`, for a column of non-empty cells.

        It gives what the converter gives for every cell, in passes that run in C (lengths,
        one regex match or one ``float`` per cell), or None when a cell is not of the plain kind
        those passes can vouch for: the caller then converts the column's distinct values one by
        one (:func:`convert_column`). Every check here implies the converter's own, so the two
        never differ; the equivalence is tested on generated columns.
        """
        return self._cached("_columns", fmt, self._make_column)  # type: ignore[no-any-return]

    def _cached(self, kind: str, fmt: str | None, make: Callable[[str | None], Any]) -> Any:
        """``make(fmt)``, made once per field, kind and format."""
        cache = self.__dict__.setdefault(kind, {})
        made = cache.get(fmt)
        if made is None:
            made = cache[fmt] = make(fmt)
        return made

    def _make_column(self, fmt: str | None) -> Callable[[list[str]], list[Any] | None]:
        t = self.data_type
        limit = self.length or DEFAULT_LENGTH.get(t, 255)

        def short(cells: list[str]) -> bool:
            return max(map(len, cells), default=0) <= limit

        if t in ("text", "textarea", "phone", "website"):
            return lambda cells: cells if short(cells) else None
        if t == "email":
            return lambda cells: cells if short(cells) and all(
                map(EMAIL_RE.match, cells)) else None
        if t == "picklist":
            allowed = frozenset(self.pick_list_values) if self.restricted else None
            return lambda cells: cells if short(cells) and (
                allowed is None or allowed.issuperset(cells)) else None
        if t == "boolean":
            table = {"true": True, "false": False}

            def booleans(cells: list[str]) -> list[Any] | None:
                values = list(map(table.get, cells))
                return None if None in values else values
            return booleans
        if t in ("integer", "bigint"):
            # no blanks (the converter strips them), at most ``limit`` digits after leading zeros
            plain_int = re.compile(rf"[+-]?0*\d{{1,{limit}}}")
            bigint = t == "bigint"

            def integers(cells: list[str]) -> list[Any] | None:
                if not all(map(plain_int.fullmatch, cells)):
                    return None
                ints = list(map(int, cells))
                return list(map(str, ints)) if bigint else ints
            return integers
        if t in ("currency", "double"):
            plain_number = re.compile(rf"[+-]?0*(?:\d{{1,{limit}}}(?:\.\d*)?|\.\d+)")
            places = self.decimal_place
            # a number of at most ``places`` decimals below 10 ** (15 - places) is its own
            # rounding: float() lands within half an ulp of it, under half a unit of its last
            # place, so round() gives the same float back. One match over the joined column
            # ("\x00" after each cell; the count proves no cell holds one) vouches for them all.
            digits = min(limit, 15 - places) if places is not None else 0
            tail = rf"(?:\.\d{{0,{places}}})?|\.\d{{1,{places}}}" if places else r"\.?"
            own_rounding = re.compile(
                rf"(?:[+-]?0*(?:\d{{1,{digits}}}{tail})\x00)+"
            ) if digits > 0 else None

            def numbers(cells: list[str]) -> list[Any] | None:
                if own_rounding is not None:
                    joined = "\x00".join(cells)
                    if joined.count("\x00") == len(cells) - 1 \
                            and own_rounding.fullmatch(joined + "\x00"):
                        return list(map(float, cells))
                if not all(map(plain_number.fullmatch, cells)):
                    return None
                floats = map(float, cells)
                return list(floats if places is None else map(round, floats, repeat(places)))
            return numbers
        if t == "datetime" and (fmt is None or fmt in ISO_DATETIME_PATTERNS):
            def datetimes(cells: list[str]) -> list[Any] | None:
                # the converter answers such a cell as it came: any offset kept as sent (no
                # output time zone), or an offset of +00:00 with the output time zone UTC
                tz = _OUTPUT_TZ[0]
                plain = PLAIN_DATETIME_RE if tz is None else PLAIN_UTC_DATETIME_RE if tz is UTC \
                    else None
                if plain is None or not all(map(plain.fullmatch, cells)):
                    return None
                try:
                    for _ in map(datetime.fromisoformat, cells):  # a real date and time each
                        pass
                except ValueError:
                    return None
                return cells
            return datetimes
        return lambda cells: None  # dates and the rest: few distinct values, converted once each

    def _make_converter(self, fmt: str | None) -> Callable[[str], Any]:
        t = self.data_type
        limit = self.length or DEFAULT_LENGTH.get(t, 255)

        # fresh exceptions each time: re-raising one instance would grow its traceback
        def invalid() -> FieldError:
            return _invalid(self)

        def too_long() -> FieldError:
            return FieldError("INVALID_DATA", self.api_name, {"maximum_length": limit})

        if t in ("text", "textarea", "phone", "website"):
            def text(s: str) -> str:
                if len(s) > limit:
                    raise too_long()
                return s
            return text
        if t == "email":
            def email(s: str) -> str:
                if len(s) > limit:
                    raise too_long()
                if not EMAIL_RE.match(s):
                    raise invalid()
                return s
            return email
        if t == "picklist":
            allowed = frozenset(self.pick_list_values) if self.restricted else None

            def picklist(s: str) -> str:
                if len(s) > limit:
                    raise too_long()
                if allowed is not None and s not in allowed:
                    raise invalid()
                return s
            return picklist
        if t == "boolean":
            table = {"true": True, "false": False}

            def boolean(s: str) -> bool:
                v = table.get(s.strip().lower())
                if v is None:
                    raise invalid()
                return v
            return boolean
        # the same cells come again and again (quantities, dates): their values are remembered
        memo: dict[str, Any] = {}
        if t in ("integer", "bigint"):
            bigint = t == "bigint"

            def integer(s: str) -> int | str:
                known = memo.get(s)
                if known is not None:
                    return known  # type: ignore[no-any-return]
                v = s.strip()
                if not INT_RE.match(v):
                    raise invalid()
                if len(v.lstrip("+-").lstrip("0") or "0") > limit:
                    raise too_long()
                n = int(v)
                value = str(n) if bigint else n
                if len(memo) < MEMO_SIZE:
                    memo[s] = value
                return value
            return integer
        if t in ("currency", "double"):
            places = self.decimal_place

            def number(s: str) -> float:
                s = s.strip()
                if not NUMBER_RE.match(s):
                    raise invalid()
                if len(s.lstrip("+-").partition(".")[0].lstrip("0")) > limit:
                    raise too_long()
                n = float(s)
                return round(n, places) if places is not None else n
            return number
        if t == "date":
            if fmt is None or fmt in ISO_DATE_PATTERNS:
                def iso_date(s: str) -> str:
                    known = memo.get(s)
                    if known is not None:
                        return known  # type: ignore[no-any-return]
                    v = s.strip()
                    if DATE_RE.match(v):
                        try:
                            date.fromisoformat(v)
                        except ValueError:
                            raise invalid() from None
                    elif fmt is None:  # Zoho's documented default for CSV dates
                        try:
                            v = datetime.strptime(v, "%m/%d/%Y").date().isoformat()
                        except ValueError:
                            raise invalid() from None
                    else:
                        raise invalid()
                    if len(memo) < MEMO_SIZE:
                        memo[s] = v
                    return v
                return iso_date
            pyfmt = compile_java_pattern(fmt)[0]

            def java_date(s: str) -> str:
                try:
                    return datetime.strptime(s.strip(), pyfmt).date().isoformat()
                except ValueError:
                    raise invalid() from None
            return java_date
        if t == "datetime":
            if fmt is None or fmt in ISO_DATETIME_PATTERNS:
                def iso_datetime(s: str) -> str:
                    s = s.strip()
                    if DATETIME_RE.match(s):
                        try:
                            dt = datetime.fromisoformat(s)
                        except ValueError:
                            raise invalid() from None
                        tz = _OUTPUT_TZ[0]
                        if tz is None:
                            if len(s) == 25 and s[19] in "+-":
                                return s
                            if dt.tzinfo is None:
                                dt = dt.replace(tzinfo=UTC)
                        elif dt.tzinfo is None:
                            dt = dt.replace(tzinfo=tz)
                        else:
                            dt = dt.astimezone(tz)
                        if dt.microsecond:  # _iso_datetime, inline: the hottest converter
                            dt = dt.replace(microsecond=0)
                        return dt.isoformat()
                    if fmt is None:
                        try:
                            return _iso_datetime(datetime.strptime(s, "%m/%d/%Y %H:%M:%S"))
                        except ValueError:
                            raise invalid() from None
                    raise invalid()
                return iso_datetime
            pyfmt = compile_java_pattern(fmt)[0]

            def java_datetime(s: str) -> str:
                try:
                    return _iso_datetime(datetime.strptime(s.strip(), pyfmt))
                except ValueError:
                    raise invalid() from None
            return java_datetime
        return lambda s: s

    def _text(self, s: str) -> str:
        limit = self.length or DEFAULT_LENGTH.get(self.data_type, 255)
        if len(s) > limit:
            raise FieldError("INVALID_DATA", self.api_name, {"maximum_length": limit})
        if self.data_type == "email" and not EMAIL_RE.match(s):
            raise _invalid(self)
        if self.data_type == "picklist" and self.restricted and s not in self.pick_list_values:
            raise _invalid(self)
        return s

    def _int(self, s: str) -> int | str:
        digits = s.lstrip("+-").lstrip("0") or "0"
        limit = self.length or DEFAULT_LENGTH[self.data_type]
        if len(digits) > limit:
            raise FieldError("INVALID_DATA", self.api_name, {"maximum_length": limit})
        n = int(s)
        return str(n) if self.data_type == "bigint" else n

    def _number(self, s: str) -> float:
        whole = s.lstrip("+-").split(".")[0].lstrip("0")
        limit = self.length or DEFAULT_LENGTH[self.data_type]
        if len(whole) > limit:
            raise FieldError("INVALID_DATA", self.api_name, {"maximum_length": limit})
        n = float(s)
        return round(n, self.decimal_place) if self.decimal_place is not None else n

    # ---- metadata -----------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """The field as ``GET /crm/v8/settings/fields`` shows it."""
        picks = [
            {
                "display_value": v,
                "sequence_number": i + 1,
                "reference_value": v,
                "colour_code": None,
                "actual_value": v,
                "id": str(int(self.id) + 1000 + i),
                "type": "used",
            }
            for i, v in enumerate(self.pick_list_values)
        ]
        if self.data_type == "picklist":
            picks.insert(
                0,
                {
                    "display_value": "-None-",
                    "sequence_number": 0,
                    "reference_value": "-None-",
                    "colour_code": None,
                    "actual_value": "-None-",
                    "id": str(int(self.id) + 999),
                    "type": "used",
                },
            )
        length = self.length or DEFAULT_LENGTH.get(self.data_type)
        return {
            "api_name": self.api_name,
            "field_label": self.field_label,
            "display_label": self.field_label,
            "id": self.id,
            "data_type": self.data_type,
            "json_type": JSON_TYPE.get(self.data_type, "string"),
            "length": length if length is not None else 120,
            "system_mandatory": self.system_mandatory,
            "custom_field": self.custom_field,
            "read_only": self.read_only,
            "field_read_only": self.read_only,
            "visible": True,
            "filterable": True,
            "searchable": True,
            "sortable": True,
            "mass_update": not self.read_only,
            "type": "used",
            "ui_type": UI_TYPE.get(self.data_type, 1),
            "display_type": -1,
            "sequence_number": self.sequence,
            "unique": {"casesensitive": "false"} if self.unique else {},
            "pick_list_values": picks,
            "decimal_place": self.decimal_place,
            "currency": {"rounding_option": "normal", "precision": self.decimal_place or 2}
            if self.data_type == "currency"
            else {},
            "view_type": {"view": True, "edit": not self.read_only, "quick_create": False,
                          "create": not self.read_only},
            "created_source": "default" if not self.custom_field else "crm",
            "default_value": None,
            "tooltip": None,
            "webhook": True,
            "separator": False,
            "virtual_field": False,
            "enable_colour_code": False,
            "history_tracking": None,
            "column_name": self.api_name.upper(),
        }


@dataclass
class Module:
    """A module (e.g. Orders) and its fields."""

    api_name: str
    id: str
    fields: dict[str, Field]
    system_duplicate_field: str | None = None
    singular_label: str = ""
    plural_label: str = ""
    field_order: list[str] = field(default_factory=list)

    @property
    def unique_fields(self) -> list[str]:
        return [n for n in self.field_order if self.fields[n].unique]

    @property
    def mandatory_fields(self) -> list[str]:
        return [n for n in self.field_order if self.fields[n].system_mandatory]

    def writable(self, api_name: str) -> Field | None:
        f = self.fields.get(api_name)
        return f if f is not None and not f.read_only else None

    def fields_metadata(self) -> list[dict[str, Any]]:
        return [self.fields[n].metadata() for n in self.field_order]


@dataclass
class Schema:
    """Every module the simulator serves."""

    modules: dict[str, Module]

    def module(self, name: str) -> Module | None:
        return self.modules.get(name)


def _build_module(spec: dict[str, Any]) -> Module:
    mod_id = str(spec.get("id") or "5725767000000002175")
    base = int(mod_id) + 100
    fields: dict[str, Field] = {}
    order: list[str] = []
    specs = list(spec["fields"])
    names = {s["api_name"] for s in specs}
    # system fields every Zoho module has; the simulator sets them, clients cannot
    for extra, dtype in (("Owner", "ownerlookup"), ("Created_By", "ownerlookup"),
                         ("Modified_By", "ownerlookup"), ("Created_Time", "datetime"),
                         ("Modified_Time", "datetime")):
        if extra not in names:
            specs.append({"api_name": extra, "field_label": extra.replace("_", " "),
                          "data_type": dtype, "read_only": True, "custom_field": False})
    for i, fs in enumerate(specs):
        f = Field(
            api_name=fs["api_name"],
            field_label=fs.get("field_label", fs["api_name"].replace("_", " ")),
            data_type=fs["data_type"],
            id=str(fs.get("id") or base + i * 10000),
            length=fs.get("length"),
            system_mandatory=bool(fs.get("system_mandatory", False)),
            unique=bool(fs.get("unique", False)),
            restricted=bool(fs.get("restricted", False)),
            pick_list_values=tuple(fs.get("pick_list_values", ())),
            decimal_place=fs.get("decimal_place"),
            custom_field=bool(fs.get("custom_field", True)),
            read_only=bool(fs.get("read_only", False)),
            sequence=i + 1,
        )
        fields[f.api_name] = f
        order.append(f.api_name)
    return Module(
        api_name=spec["api_name"],
        id=mod_id,
        fields=fields,
        system_duplicate_field=spec.get("system_duplicate_field"),
        singular_label=spec.get("singular_label", spec["api_name"]),
        plural_label=spec.get("plural_label", spec["api_name"]),
        field_order=order,
    )


def load_schema(path: str | Path | None = None) -> Schema:
    """Load a schema file, or the shipped ``orders_schema.json`` when ``path`` is None."""
    if path is None:
        text = resources.files("zohosim").joinpath("orders_schema.json").read_text("utf-8")
    else:
        text = Path(path).read_text("utf-8")
    data = json.loads(text)
    mods = [_build_module(m) for m in data["modules"]]
    return Schema({m.api_name: m for m in mods})
