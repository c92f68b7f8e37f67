"""Bulk write: uploaded zips, create-job validation (§3.3), row processing and result zips (§5)."""

from __future__ import annotations

import codecs
import csv
import io
import operator
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any, NamedTuple

from zohosim.records import RecordStore, norm_key
from zohosim.schema import FieldError, Schema, check_format

MAX_UPLOAD_BYTES = 25 * 1024 * 1024
MAX_ROWS = 25_000
MAX_COLUMNS = 200
DELIMITERS = (",", ";", ":", "|")
OPERATIONS = ("insert", "update", "upsert")


class ApiError(Exception):
    """A request-level Zoho error: HTTP status plus the standard envelope."""

    def __init__(self, status: int, code: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(status, code, message, details)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "details": self.details, "message": self.message,
                "status": "error"}


@dataclass
class CsvFile:
    """One CSV from an uploaded zip."""

    name: str
    header: list[str]
    rows: list[list[str]]
    raw: bytes = b""


class Upload:
    """An uploaded zip: parsed until a job takes its rows, then only the zip, on disk.

    A file id stays valid after its job (a second job may name it): its CSVs are parsed again
    from the spilled zip then, so memory holds the rows of uploads no job has used yet.
    """

    def __init__(self, file_id: str, created_time: str, data: bytes,
                 csvs: list[CsvFile]) -> None:
        self.file_id = file_id
        self.created_time = created_time
        self.data: bytes | None = data
        self._csvs: list[CsvFile] | None = csvs
        self.path: Path | None = None

    @property
    def csvs(self) -> list[CsvFile]:
        if self._csvs is not None:
            return self._csvs
        return parse_upload(self.zip_bytes())

    def zip_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()

    def spill(self, directory: Path) -> None:
        """Write the zip to ``directory`` (once); :meth:`drop` then frees the memory."""
        if self.path is None and self.data is not None:
            path = directory / f"upload-{self.file_id}.zip"
            path.write_bytes(self.data)
            self.path = path

    def drop(self) -> None:
        if self.path is not None:
            self.data = None
            self._csvs = None


def is_zip(data: bytes) -> bool:
    return data[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def _decode(raw: bytes, encoding: str | None = None) -> str:
    if encoding:
        try:
            text = raw.decode(encoding)
            return text[1:] if text.startswith("\ufeff") else text
        except (LookupError, UnicodeDecodeError):
            pass
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def parse_csv(name: str, raw: bytes, encoding: str | None = None) -> CsvFile:
    """Parse one CSV; the delimiter is detected from the header row."""
    text = _decode(raw, encoding)
    first = text.split("\n", 1)[0]
    delim = max(DELIMITERS, key=first.count) if any(d in first for d in DELIMITERS) else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    header = next(reader, [])
    rows = [r for r in reader if any(r)]  # blank lines (all cells empty) are not rows
    return CsvFile(name=name, header=header, rows=rows, raw=raw)


def parse_upload(data: bytes) -> list[CsvFile]:
    """The CSVs inside an uploaded zip; raises ApiError for what Zoho refuses at upload."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        members = [i for i in zf.infolist() if not i.is_dir()
                   and not i.filename.startswith("__MACOSX/")]
        csvs = [parse_csv(i.filename.rsplit("/", 1)[-1], zf.read(i)) for i in members]
    except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError) as exc:
        raise ApiError(400, "INVALID_FILE_FORMAT",
                       "invalid file format. only zip format is supported") from exc
    if not csvs:
        raise ApiError(400, "INVALID_FILE_FORMAT", "the zip file does not contain a CSV file")
    for c in csvs:
        if len(c.header) > MAX_COLUMNS:
            raise ApiError(400, "HEADER_LIMIT_EXCEEDED",
                           f"the file has more than {MAX_COLUMNS} columns")
        if len(c.rows) > MAX_ROWS:
            raise ApiError(400, "LIMIT_EXCEEDED",
                           f"the file has more than {MAX_ROWS} records",
                           {"limit": MAX_ROWS})
    return csvs


# ---- create job ------------------------------------------------------------------------------
def _missing(key: str, json_path: str, message: str | None = None) -> ApiError:
    return ApiError(400, "MANDATORY_NOT_FOUND",
                    message or f"required key {key} is not found in request body.",
                    {"api_name": key, "json_path": json_path})


def _invalid(key: str, json_path: str, message: str = "invalid data",
             extra: dict[str, Any] | None = None) -> ApiError:
    details = {"api_name": key, "json_path": json_path}
    details.update(extra or {})
    return ApiError(400, "INVALID_DATA", message, details)


@dataclass
class Mapping:
    api_name: str
    index: int | None
    format: str | None
    default: Any
    find_by: str | None
    column: str  # header name used in result ERRORS cells


@dataclass
class JobSpec:
    """A validated create-job request."""

    operation: str
    ignore_empty: bool
    character_encoding: str | None
    callback: dict[str, str] | None
    module: str
    file_id: str
    find_by: str | None
    mappings: list[Mapping]
    echo_mappings: list[dict[str, Any]]
    csv: CsvFile


def validate_job(body: Any, schema: Schema, uploads: dict[str, Upload]) -> JobSpec:
    """Check a create-job body field by field, in Zoho's order; raise the first ApiError."""
    if not isinstance(body, dict):
        raise ApiError(400, "INVALID_DATA", "the request body is not a valid JSON object", {})
    op = body.get("operation")
    if op is None:
        raise _missing("operation", "$.operation")
    if op not in OPERATIONS:
        raise _invalid("operation", "$.operation", extra={"supported_values": list(OPERATIONS)})
    ignore_empty = body.get("ignore_empty", False)
    if not isinstance(ignore_empty, bool):
        raise _invalid("ignore_empty", "$.ignore_empty", extra={"expected_data_type": "boolean"})
    enc = body.get("character_encoding")
    if enc is not None and not isinstance(enc, str):
        raise _invalid("character_encoding", "$.character_encoding")
    callback = body.get("callback")
    if callback is not None:
        if not isinstance(callback, dict):
            raise _invalid("callback", "$.callback", extra={"expected_data_type": "jsonobject"})
        if "url" not in callback:
            raise _missing("url", "$.callback.url")
        url = callback["url"]
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise _invalid("url", "$.callback.url", "invalid callback url")
        if "method" not in callback:
            raise _missing("method", "$.callback.method")
        if not isinstance(callback["method"], str) or callback["method"].lower() != "post":
            raise ApiError(400, "INVALID_CALLBACK_METHOD", "invalid callback method",
                           {"supported_callback_methods": ["post"]})
        callback = {"url": url, "method": callback["method"]}
    resources = body.get("resource")
    if resources is None:
        raise _missing("resource", "$.resource")
    if not isinstance(resources, list) or not resources:
        raise _invalid("resource", "$.resource", extra={"expected_data_type": "jsonarray"})
    if len(resources) > 1:
        raise ApiError(400, "FILE_NOT_SUPPORTED", "File not supported for bulk write",
                       {"api_name": "resource", "json_path": "$.resource"})
    res = resources[0]
    jp = "$.resource[0]"
    if not isinstance(res, dict):
        raise _invalid("resource", jp, extra={"expected_data_type": "jsonobject"})
    if "type" not in res:
        raise _missing("type", f"{jp}.type")
    if res["type"] != "data":
        raise _invalid("type", f"{jp}.type", extra={"supported_values": ["data"]})
    mod = res.get("module")
    if mod is None:
        raise _missing("module", f"{jp}.module")
    if not isinstance(mod, dict):
        raise _invalid("module", f"{jp}.module", extra={"expected_data_type": "jsonobject"})
    if "api_name" not in mod and "id" not in mod:
        raise _missing("api_name", f"{jp}.module.api_name")
    module = schema.module(str(mod.get("api_name"))) if "api_name" in mod else next(
        (m for m in schema.modules.values() if m.id == str(mod.get("id"))), None)
    if module is None:
        raise ApiError(400, "MODULE_NOT_AVAILABLE",
                       f"Requested module '{mod.get('api_name', mod.get('id'))}' is not available.",
                       {"api_name": "module", "json_path": f"{jp}.module"})
    if "file_id" not in res:
        raise _missing("file_id", f"{jp}.file_id")
    file_id = str(res["file_id"])
    upload = uploads.get(file_id)
    if upload is None:
        raise ApiError(400, "INVALID_FILE_ID", "improper file id",
                       {"api_name": "file_id", "json_path": f"{jp}.file_id"})
    csvs = upload.csvs  # parsed again from disk when a job has used the file already
    if len(csvs) != 1:
        raise ApiError(400, "FILE_NOT_SUPPORTED", "File not supported for bulk write",
                       {"api_name": "file_id", "json_path": f"{jp}.file_id"})
    csvf = csvs[0]
    if enc is not None:
        try:
            "".encode(enc)  # a text encoding (codecs.lookup also knows base64, rot13, ...)
            codec = codecs.lookup(enc).name
        except LookupError:
            raise _invalid("character_encoding", "$.character_encoding",
                           "unsupported character encoding") from None
        if codec != "utf-8":  # the upload was read as UTF-8 (cp1252 where that fails) already
            csvf = parse_csv(csvf.name, csvf.raw, enc)
    find_by = res.get("find_by")
    if op in ("update", "upsert") and not find_by:
        raise _missing("find_by", f"{jp}.find_by", "Required key find_by is not available")
    if find_by is not None:
        f = module.fields.get(find_by)
        if find_by != "id" and (f is None or not f.unique):
            raise _invalid("find_by", f"{jp}.find_by",
                           "find_by must be a unique field or id")
    ie = res.get("ignore_empty")
    if isinstance(ie, bool):
        ignore_empty = ie
    raw_maps = res.get("field_mappings")
    mappings: list[Mapping] = []
    echo: list[dict[str, Any]] = []
    if raw_maps is None:
        for i, name in enumerate(csvf.header):
            if name == "id" or module.writable(name) is not None:
                mappings.append(Mapping(name, i, None, None, None, name))
                echo.append({"api_name": name, "index": i, "format": None, "find_by": None,
                             "module": None, "default_value": None})
    else:
        if not isinstance(raw_maps, list):
            raise _invalid("field_mappings", f"{jp}.field_mappings",
                           extra={"expected_data_type": "jsonarray"})
        if len(raw_maps) > 200:
            raise ApiError(400, "HEADER_LIMIT_EXCEEDED", "more than 200 fields are mapped",
                           {"api_name": "field_mappings", "json_path": f"{jp}.field_mappings"})
        for k, m in enumerate(raw_maps):
            mp = f"{jp}.field_mappings[{k}]"
            if not isinstance(m, dict):
                raise _invalid("field_mappings", mp, extra={"expected_data_type": "jsonobject"})
            if m.get("api_name") is None:
                raise _missing("api_name", f"{mp}.api_name")
            name = str(m["api_name"])
            fld = module.writable(name)
            if name != "id" and fld is None:
                raise ApiError(400, "INVALID_FIELD", f"invalid mapping. invalid api_name {name}.",
                               {"api_name": name, "json_path": f"{mp}.api_name"})
            default = m.get("default_value")
            if default is not None and not (isinstance(default, dict) and "value" in default):
                raise _invalid("default_value", f"{mp}.default_value",
                               extra={"expected_data_type": "jsonobject"})
            index = m.get("index")
            if index is None and default is None:
                raise _missing("index", f"{mp}.index",
                               f"required key index for field {name} is not found in request body.")
            if index is not None:
                if isinstance(index, bool) or not isinstance(index, int):
                    raise _invalid("index", f"{mp}.index", extra={"expected_data_type": "integer"})
                if index < 0 or index >= len(csvf.header):
                    raise ApiError(400, "COLUMN_INDEX_NOT_FOUND",
                                   f"column index {index} is not found in the file",
                                   {"api_name": name, "json_path": f"{mp}.index"})
            fmt = m.get("format")
            if fmt is not None and fld is not None and not check_format(fld.data_type, fmt):
                raise ApiError(400, "INVALID_FORMAT", f"invalid format {fmt!r} for {name}",
                               {"api_name": name, "json_path": f"{mp}.format"})
            mfind = m.get("find_by")
            column = csvf.header[index] if index is not None else name
            mappings.append(Mapping(name, index, fmt,
                                    default["value"] if default is not None else None,
                                    mfind, column or name))
            echo.append({"api_name": name, "index": index, "format": fmt,
                         "find_by": mfind, "module": m.get("module"),
                         "default_value": default})
    mapped = {m.api_name for m in mappings}
    if op in ("insert", "upsert"):
        missing = [f for f in module.mandatory_fields if f not in mapped]
        if missing:
            raise ApiError(400, "MANDATORY_FIELDS_NOT_MAPPED",
                           "All mandatory fields are not mapped for the layout",
                           {"api_name": missing[0], "json_path": f"{jp}.field_mappings"})
    return JobSpec(op, ignore_empty, enc, callback, module.api_name, file_id, find_by,
                   mappings, echo, csvf)


# ---- processing ------------------------------------------------------------------------------
class RowResult(NamedTuple):
    status: str  # ADDED / UPDATED / SKIPPED
    record_id: str
    errors: str


def _errors_cell(errors: dict[str, list[str]]) -> str:
    return ":".join(f"{code}-{','.join(cols)}" for code, cols in errors.items())


@dataclass
class CompiledJob:
    """Per-job precomputation for the row loop."""

    # (api name, index, column header, default, converter) per mapping
    mappings: list[tuple[str, int | None, str, str | None, Any]]
    key_column: str
    columns: dict[str, str]
    mandatory: list[str]
    # unique fields a row may collide on besides find_by (its holder is the row's target)
    other_unique: list[str] = field(default_factory=list)
    # when every mapping reads a column (no id column, no default): (api name, index, converter)
    # for rows of full width, and the width they need
    plain: list[tuple[str, int, str, Any]] | None = None
    width: int = 0
    # the bulk form of each plain mapping's converter (Field.csv_column), in the same order
    bulk: list[Any] = field(default_factory=list)


def compile_job(spec: JobSpec, store: RecordStore) -> CompiledJob:
    module = store.module
    maps = []
    key_column = spec.find_by or ""
    for m in spec.mappings:
        if m.api_name == spec.find_by:
            key_column = m.column
        default = None if m.default is None else str(m.default)
        conv = None if m.api_name == "id" else module.fields[m.api_name].csv_converter(m.format)
        maps.append((m.api_name, m.index, m.column, default, conv))
    plain: list[tuple[str, int, str, Any]] | None = []
    for name, index, column, default, conv in maps:
        if index is None or default is not None or conv is None:
            plain = None
            break
        assert plain is not None
        plain.append((name, index, column, conv))
    width = 1 + max((m[1] for m in maps if m[1] is not None), default=-1)
    formats = {m.api_name: m.format for m in spec.mappings}
    bulk = [module.fields[name].csv_column(formats[name]) for name, *_ in plain or ()]
    return CompiledJob(maps, key_column, {m.api_name: m.column for m in spec.mappings},
                       module.mandatory_fields,
                       [f for f in store.unique if f != spec.find_by], plain, width, bulk)


def process_row(spec: JobSpec, cj: CompiledJob, store: RecordStore, row: list[str],
                new_id: Any, now: str) -> RowResult:
    """Apply one CSV row of a bulk job to ``store``."""
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] | None = None
    key_value: Any = None
    ignore_empty = spec.ignore_empty
    width = len(row)
    if cj.plain is not None and width >= cj.width:  # the common row: the same, fewer checks
        for name, col, column, conv in cj.plain:
            cell = row[col]
            if cell:
                try:
                    values[name] = conv(cell)
                except FieldError as e:
                    if errors is None:
                        errors = {}
                    errors.setdefault(e.code, []).append(column)
            elif not ignore_empty:
                values[name] = None
        maps: list[tuple[str, int | None, str, str | None, Any]] = []
    else:
        maps = cj.mappings
    for name, index, column, default, conv in maps:
        cell = row[index] if index is not None and index < width else ""
        if cell == "" and default is not None:
            cell = default
        if conv is None:  # the record id column
            key_value = cell or None
            continue
        if cell == "":
            if not ignore_empty:
                values[name] = None
            continue
        try:
            values[name] = conv(cell)
        except FieldError as e:
            if errors is None:
                errors = {}
            errors.setdefault(e.code, []).append(column)
    if errors:
        return RowResult("SKIPPED", "", _errors_cell(errors))
    return apply_values(spec, cj, store, values, key_value, new_id, now)


def apply_values(spec: JobSpec, cj: CompiledJob, store: RecordStore, values: dict[str, Any],
                 key_value: Any, new_id: Any, now: str) -> RowResult:
    """Apply one row's converted ``values`` to ``store``: match on find_by, check, write."""
    find_by = spec.find_by
    if find_by and find_by != "id":
        key_value = values.get(find_by)
    target = store.lookup(find_by, key_value) if find_by and key_value else None
    if spec.operation == "insert" and target is not None:
        return RowResult("SKIPPED", "", f"DUPLICATE_DATA-{cj.key_column}")
    if spec.operation == "update" and target is None:
        return RowResult("SKIPPED", "", f"RESOURCE_NOT_FOUND-{cj.key_column}")
    missing = [f for f in cj.mandatory
               if (target is None and values.get(f) is None) or (f in values and values[f] is None)]
    if missing:
        return RowResult("SKIPPED", "",
                         f"MANDATORY_NOT_FOUND-{','.join(cj.columns.get(f, f) for f in missing)}")
    conflicts = store.unique_conflicts(values, exclude=target, fields=cj.other_unique)
    if conflicts:
        cols = ",".join(cj.columns.get(f, f) for f, _ in conflicts)
        return RowResult("SKIPPED", "", f"DUPLICATE_DATA-{cols}")
    if target is None:
        rec = store.insert(new_id(), values, now)
        return RowResult("ADDED", rec["id"], "")
    store.update(target, values, now)
    return RowResult("UPDATED", target, "")


# a cell csv.writer quotes (QUOTE_MINIMAL, lineterminator "\n")
NEEDS_QUOTES = re.compile(r'[,"\r\n]')


def convert_column(conv: Any, bulk: Any, cells: Sequence[str]) -> tuple[list[Any], set[int]]:
    """One column of cells -> (values, None for an empty cell; indexes of refused cells).

    The values are those ``conv`` gives cell by cell: from ``bulk`` (:meth:`Field.csv_column`)
    where it vouches for every cell, else from ``conv`` once per distinct value.
    """
    has_empty = "" in cells
    full = [c for c in cells if c] if has_empty else list(cells)
    values = bulk(full)
    if values is not None:
        if not has_empty:
            return values, set()
        it = iter(values)
        return [next(it) if c else None for c in cells], set()
    known: dict[str, Any] = {"": None}
    refused: set[str] = set()
    for c in set(full):
        try:
            known[c] = conv(c)
        except FieldError:
            refused.add(c)
    if not refused:
        return list(map(known.__getitem__, cells)), set()
    return [known.get(c) for c in cells], {k for k, c in enumerate(cells) if c in refused}


class Prepared:
    """Rows ``start`` .. ``stop`` of a job, converted column by column before the state lock.

    ``values(k)`` is row ``k``'s values dict as :func:`process_row` builds it; a row with a cell
    its field refuses is ``bad(k)`` and goes through process_row, whose errors cell is the
    reference. ``inserts_only`` tells when every row is a plain insert, which
    :meth:`RecordStore.insert_columns` then writes in one pass.
    """

    def __init__(self, start: int, stop: int, names: list[str], columns: list[list[Any]],
                 refused: set[int], index_keys: list[tuple[str, list[str | None]]],
                 insertable: bool, cells: list[tuple[str, ...]]) -> None:
        self.start, self.stop = start, stop
        self.cells = cells  # the chunk's cells column by column, as read (for the result file)
        self.names = names
        self.columns = columns
        self.refused = refused  # indexes within the chunk
        self.index_keys = index_keys  # (indexed field, norm key per row or None)
        self.insertable = insertable
        self._tuples: list[tuple[Any, ...]] | None = None

    def bad(self, k: int) -> bool:
        return k - self.start in self.refused

    def values(self, k: int) -> dict[str, Any]:
        if self._tuples is None:
            self._tuples = list(zip(*self.columns, strict=True))
        return dict(zip(self.names, self._tuples[k - self.start], strict=True))

    def inserts_only(self, store: RecordStore) -> bool:
        """Every row inserts a record: no refused cell, no key held already or twice."""
        if not self.insertable:
            return False
        fields = store.module.fields
        return all(store.index[f].keys().isdisjoint(keys) for f, keys in self.index_keys
                   if fields[f].unique)


def _distinct(keys: list[str | None]) -> bool:
    """No key twice among the non-empty ones (the second row would update the first)."""
    present = [k for k in keys if k is not None] if None in keys else keys
    return len(set(present)) == len(present)


def _norm_keys(values: list[Any]) -> list[str | None]:
    """:func:`~zohosim.records.norm_key` of each value (None stays None)."""
    if None not in values and all(type(v) is str for v in values):
        return list(map(str.casefold, values))
    return [None if v is None else norm_key(v) for v in values]


def prepare_rows(spec: JobSpec, cj: CompiledJob, store: RecordStore, rows: list[list[str]],
                 start: int, stop: int) -> Prepared | None:
    """Convert ``rows[start:stop]`` column by column; None when the rows need the row-by-row path
    (mappings with defaults or the id column, ignore_empty, short rows)."""
    if cj.plain is None or spec.ignore_empty or stop <= start:
        return None
    chunk = rows[start:stop]
    if min(map(len, chunk)) < cj.width:
        return None
    # column by column, as wide as the shortest row (at least cj.width)
    cells = list(zip(*chunk, strict=False))
    names: list[str] = []
    columns: list[list[Any]] = []
    refused: set[int] = set()
    for (name, col, _column, conv), bulk in zip(cj.plain, cj.bulk, strict=True):
        values, bad = convert_column(conv, bulk, cells[col])
        names.append(name)
        columns.append(values)
        refused |= bad
    by_name = dict(zip(names, columns, strict=True))
    index_keys = [(f, _norm_keys(by_name[f])) for f in store.indexed if f in by_name]
    insertable = (
        spec.operation in ("insert", "upsert") and not refused and len(by_name) == len(names)
        and all(f in by_name and None not in by_name[f] for f in cj.mandatory)
        and all(_distinct(keys) for f, keys in index_keys if store.module.fields[f].unique)
    )
    return Prepared(start, stop, names, columns, refused, index_keys, insertable, cells)


def result_columns(spec: JobSpec) -> list[int]:
    """Indexes of the first three mapped columns of the upload."""
    return sorted({m.index for m in spec.mappings if m.index is not None})[:3]


class ResultFile:
    """A job's result CSV ``<Module>-<csv name>`` (§5.2), written as its rows are processed."""

    def __init__(self, spec: JobSpec) -> None:
        self.cols = result_columns(spec)
        # the result's first cells of a full-width row in one call (itemgetter of 2+ indexes)
        self.pick = operator.itemgetter(*self.cols) if len(self.cols) > 1 else None
        self.name = f"{spec.module}-{spec.csv.name}"
        self.buf = io.StringIO()
        self.writer = csv.writer(self.buf, lineterminator="\n")
        self.writer.writerow([spec.csv.header[i] for i in self.cols]
                             + ["STATUS", "RECORD_ID", "ERRORS"])

    def add(self, row: list[str], res: RowResult) -> None:
        if self.pick is not None:
            try:
                self.writer.writerow((*self.pick(row), *res))
                return
            except IndexError:  # a short row: its missing cells are empty
                pass
        width = len(row)
        self.writer.writerow([row[i] if i < width else "" for i in self.cols]
                             + [res.status, res.record_id, res.errors])

    def add_inserted(self, ids: list[str], cells: list[tuple[str, ...]]) -> None:
        """``add`` of full-width rows, given column by column (``cells``), that each inserted the
        record of the same index in ids."""
        firsts = [cells[i] for i in self.cols]
        lines = zip(*firsts, repeat("ADDED"), ids, repeat(""))
        if any(NEEDS_QUOTES.search("\x1f".join(column)) for column in firsts):
            self.writer.writerows(lines)
        else:  # no cell the writer would quote: the lines it writes, joined in one call
            self.buf.write("\n".join(map(",".join, lines)))
            self.buf.write("\n")

    def zip_bytes(self) -> bytes:
        out = io.BytesIO()
        # the fastest deflate level: a third of the time of the default, the same CSV inside
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            zf.writestr(self.name, self.buf.getvalue())
        self.buf = io.StringIO()
        return out.getvalue()


def build_result_zip(spec: JobSpec, results: list[RowResult], module: str) -> tuple[str, bytes]:
    """The result zip of ``results`` (one per row of the upload); returns (csv name, zip bytes)."""
    out = ResultFile(spec)
    out.name = f"{module}-{spec.csv.name}"
    for row, res in zip(spec.csv.rows, results, strict=False):
        out.add(row, res)
    return out.name, out.zip_bytes()
