"""Showing settings: ``describe_settings`` (the TOML layout, secrets masked).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from pipeline.secret import Secret
from pipeline.settings.load import _SYNC_KEYS, MASK
from pipeline.settings.model import Settings, SourceSettings
from pipeline.zoho.config import ZohoSettings

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
