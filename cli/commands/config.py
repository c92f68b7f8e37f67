"""``ordersync config show`` and ``ordersync config check``: the effective settings, masked.

``check`` also compares them with the live legacy table (read-only) and with the Zoho module's
field metadata (``pipeline.mapping_check``: 1 credit when the cached copy is older than an hour)
and exits 1 when anything would stop a sync or make Zoho refuse rows, naming the key to change.
Warnings are printed but do not fail the check.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import psycopg2

from pipeline import mapping_check
from pipeline.legacy.connection import connect
from pipeline.settings import (
    ConfigError,
    Problem,
    Settings,
    Severity,
    check_database,
    check_settings,
    describe_settings,
    load_settings,
)


def register(subparsers: Any) -> None:
    """Add ``config show`` and ``config check`` to the ``ordersync`` parser."""
    parser = subparsers.add_parser("config", help="show or check the configuration")
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="print the effective configuration, secrets masked")
    check = actions.add_parser(
        "check", help="print the effective configuration and check it against the database"
    )
    for action, handler in ((show, run_show), (check, run_check)):
        action.add_argument("--json", action="store_true", help="print one JSON object")
        action.set_defaults(func=handler)


def run_show(args: argparse.Namespace) -> int:
    """Print the effective configuration; exit 1 if it does not load."""
    settings = _load(args)
    if settings is None:
        return 1
    if args.json:
        print(json.dumps(describe_settings(settings), indent=2))
    else:
        print(to_toml(describe_settings(settings)), end="")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Print the configuration and every problem; exit 1 if any problem is an error."""
    settings = _load(args)
    if settings is None:
        return 1
    problems = check_settings(settings) + check_database(settings)
    problems += zoho_problems(settings)
    errors = [p for p in problems if p.severity is Severity.ERROR]
    if args.json:
        document = {
            "settings": describe_settings(settings),
            "problems": [_problem_dict(p) for p in problems],
            "ok": not errors,
        }
        print(json.dumps(document, indent=2))
    else:
        print(to_toml(describe_settings(settings)), end="")
        for problem in problems:
            print(problem, file=sys.stderr)
        warnings = len(problems) - len(errors)
        summary = f"{len(errors)} error(s), {warnings} warning(s)" if problems else "no problems"
        print(f"configuration {'FAILED' if errors else 'OK'}: {summary}", file=sys.stderr)
    return 1 if errors else 0


def zoho_problems(settings: Settings) -> list[Problem]:
    """The mapping against the module's fields (``pipeline.mapping_check``), with the table's
    picklist values when the database can be read."""
    try:
        conn = connect(settings, application="ordersync config check")
    except psycopg2.Error:
        return mapping_check.against_zoho(settings)  # check_database says why
    try:
        conn.set_session(readonly=True)
        return mapping_check.against_zoho(settings, conn)
    except psycopg2.Error:
        return mapping_check.against_zoho(settings)
    finally:
        conn.close()


def _load(args: argparse.Namespace) -> Settings | None:
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        if args.json:
            problem = Problem(exc.key, exc.message)
            print(json.dumps({"settings": None, "problems": [_problem_dict(problem)], "ok": False}))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return None


def _problem_dict(problem: Problem) -> dict[str, str]:
    return {"severity": str(problem.severity), "key": problem.key, "message": problem.message}


def to_toml(document: dict[str, Any]) -> str:
    """Render ``describe_settings`` output as TOML (unset optional values as comments)."""
    lines: list[str] = []
    for section in ("source", "zoho", "sync"):
        lines.append(f"[{section}]")
        lines.extend(_toml_lines(document[section]))
        lines.append("")
    for entry in document["mapping"]:
        lines.append("[[mapping]]")
        lines.extend(_toml_lines(entry))
        lines.append("")
    return "\n".join(lines)


def _toml_lines(table: dict[str, Any]) -> list[str]:
    return [
        f"# {key} is not set" if value is None else f"{key} = {_toml_value(value)}"
        for key, value in table.items()
    ]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    return repr(value)
