"""The import arrows of docs/architecture.md, checked by import-linter (pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_imports_flow_one_way() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_the_production_app_registers_no_test_helper() -> None:
    """``ordersync.probe`` lives in tests/fixtures/probe_app.py, not in the app we ship."""
    code = (
        "import tasks.app as m; m.app.loader.import_default_modules();"
        "print(sorted(n for n in m.app.tasks if n.startswith('ordersync.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    names = done.stdout.strip()
    assert "ordersync.extract" in names, names
    assert "ordersync.probe" not in names, names
    assert not (REPO / "tasks" / "probe.py").exists()
