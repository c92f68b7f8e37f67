"""``ordersync web`` replaces itself with ``python -m cli.web``, arguments handed on."""

from __future__ import annotations

from pipeline.settings import Settings
from tests.cli.helpers import run_cli


def test_web_execs_the_web_process(fresh_db: Settings) -> None:
    result = run_cli(fresh_db, "web", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ordersync web")  # cli.web's own parser
    assert "--port" in result.stdout


def test_worker_and_beat_exec_celery(fresh_db: Settings) -> None:
    for name, usage in (("worker", "celery worker"), ("beat", "celery beat")):
        result = run_cli(fresh_db, name, "--help")
        assert result.returncode == 0, result.stderr
        assert usage in result.stdout.splitlines()[0]
