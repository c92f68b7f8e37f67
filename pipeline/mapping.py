"""The field mapping: which legacy column becomes which Zoho field, with what type and rules."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FieldType(StrEnum):
    """Zoho field types a legacy orders table can feed."""

    TEXT = "text"  # Single Line, max_length <= 255
    MULTILINE = "multiline"  # Multi Line, max_length <= 32,000
    EMAIL = "email"
    PICKLIST = "picklist"  # allowed values in FieldSpec.allowed
    INTEGER = "integer"
    DECIMAL = "decimal"
    CURRENCY = "currency"
    DATE = "date"
    DATETIME = "datetime"
    BOOLEAN = "boolean"


@dataclass(frozen=True)
class FieldSpec:
    """One mapped column: legacy ``column`` → Zoho ``api_name`` of ``type``."""

    column: str
    api_name: str
    type: FieldType
    max_length: int | None = None  # text kinds only
    allowed: tuple[str, ...] = ()  # picklist values
    mandatory: bool = False  # Zoho refuses a record without it


@dataclass(frozen=True)
class Mapping:
    """The whole mapping. ``key_column`` is the legacy key; it feeds ``unique_field``.

    The key's own FieldSpec (column == key_column, api_name == unique_field) is in ``fields``;
    ``fields`` is in CSV column order, and the key is always among the first three columns so
    that Zoho's result file (first three mapped columns + STATUS, RECORD_ID, ERRORS) names it.
    """

    fields: tuple[FieldSpec, ...]
    key_column: str = "id"
    unique_field: str = "parent_id"

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.column for f in self.fields)

    @property
    def api_names(self) -> tuple[str, ...]:
        return tuple(f.api_name for f in self.fields)

    @property
    def key_field(self) -> FieldSpec:
        for spec in self.fields:
            if spec.column == self.key_column:
                return spec
        raise KeyError(self.key_column)
