"""Settings: one typed object, read once from ``ordersync.toml`` and ``ORDERSYNC_*`` variables.

``model``    the shapes (``Settings``, ``SourceSettings``, ``SyncMode``, the demo mapping)
``load``     reading, converting and validating (``load_settings``, ``ConfigError``, ``Problem``)
``checks``   what ``ordersync config check`` reports (``check_settings``; ``check_database``,
             read-only against the legacy table)
``display``  ``describe_settings``: the effective settings, secrets masked

Import from ``pipeline.settings``; the split is for the reader, not the callers.
"""

from __future__ import annotations

from pipeline.settings.checks import (
    accepts_column_type,
    check_database,
    check_settings,
    table_columns,
)
from pipeline.settings.display import (
    describe_settings,
)
from pipeline.settings.load import (
    CONFIG_ENV,
    DEFAULT_CONFIG_FILE,
    ENV_PREFIX,
    MASK,
    ConfigError,
    Problem,
    Severity,
    crontab_problem,
    load_settings,
    validate_mapping,
    validate_settings,
    zoho_wins_fields,
)
from pipeline.settings.model import (
    DEFAULT_MAPPING,
    MAX_BATCH_SIZE,
    Settings,
    SourceSettings,
    SyncMode,
)

__all__ = [
    "CONFIG_ENV",
    "ConfigError",
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_MAPPING",
    "ENV_PREFIX",
    "MASK",
    "MAX_BATCH_SIZE",
    "Problem",
    "Settings",
    "Severity",
    "SourceSettings",
    "SyncMode",
    "accepts_column_type",
    "check_database",
    "check_settings",
    "crontab_problem",
    "describe_settings",
    "load_settings",
    "table_columns",
    "validate_mapping",
    "validate_settings",
    "zoho_wins_fields",
]
