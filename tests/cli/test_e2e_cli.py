"""The operator's loop end to end: ``sync initial --follow`` with a real worker and zohosim,
then ``status``, ``errors``, ``sync initial --dry-run`` and ``retry`` on what it left."""

from __future__ import annotations

from celery import Celery

from tests.cli.helpers import cli_json, run_cli
from tests.e2e.conftest import E2E, MakeE2E, make_e2e  # noqa: F401 (the fixture)
from tests.fixtures.celery import CeleryTestEnv

ROWS, BAD_ROWS = 200, 4


def _env(world: E2E, celery_env: CeleryTestEnv) -> dict[str, str]:
    broker = {k: v for k, v in celery_env.env().items() if k.startswith("ORDERSYNC_")}
    return {**world.env, **broker}


def test_operator_loop(
    make_e2e: MakeE2E,  # noqa: F811 (the imported fixture)
    celery_env: CeleryTestEnv,
    celery_sender: Celery,
) -> None:
    world = make_e2e(rows=ROWS, batch_size=100, bad_rows=BAD_ROWS)
    env = _env(world, celery_env)

    before = cli_json(world.settings, "sync", "initial", "--dry-run", "--json", env=env)
    assert before["validation"]["bad_rows"] == BAD_ROWS and before["batches"] == 2
    # 196 writable rows in batches of 100: by upsert (2 calls), as the run will send them;
    # the 4 bad rows are held back and never sent
    assert (before["plan"]["bulk_jobs"], before["plan"]["upsert_calls"]) == (0, 2)
    assert before["rows"]["writable"] == ROWS - BAD_ROWS
    predicted = before["forecast"]["credits"]
    assert predicted == before["forecast"]["minimum"] == 20

    result = run_cli(
        world.settings, "sync", "initial", "--follow", "--interval", "0.2", env=env, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    run_id = int(lines[0].split()[2])
    assert lines[0] == f"initial run {run_id} started (ordersync.initial.start sent)"
    assert lines[-1] == f"run {run_id} done"
    final = next(line for line in reversed(lines) if line.startswith(f"run {run_id} done:"))
    assert f"run {run_id} done: {ROWS:,} of {ROWS:,} rows (100.0%)" in final
    assert f"synced {ROWS - BAD_ROWS}" in final and f"held back {BAD_ROWS}" in final
    assert f"credits spent {predicted} of {predicted} predicted" in final
    # every credit explained, in one line each
    assert f"credits spent  {predicted} = 2 upsert call(s) {predicted}" in lines
    assert "difference     none: spent as predicted" in lines

    status = cli_json(world.settings, "status", "--json", env=env)
    assert status["runs"][0]["id"] == run_id and status["runs"][0]["state"] == "done"
    assert status["running_run_ids"] == []
    run = status["runs"][0]
    assert (run["rows_written"], run["rows_refused"], run["rows_validated_out"]) == (
        ROWS - BAD_ROWS, 0, BAD_ROWS
    )  # fmt: skip
    assert run["credits_spent"] == run["credits_predicted"] == run["credits_minimum"] == predicted
    text = run_cli(world.settings, "status", env=env).stdout
    assert (
        f"rows written {ROWS - BAD_ROWS}, refused by Zoho 0, held back by the field rules" in text
    )
    rows = status["rows"]
    assert (rows["synced"], rows["pending"], rows["claimed"]) == (ROWS - BAD_ROWS, BAD_ROWS, 0)
    assert (rows["in_error"], rows["quarantined"], rows["sendable"]) == (BAD_ROWS, BAD_ROWS, 0)
    # and 1 for the module's fields, which sync initial read to check the mapping first
    assert status["credits"]["spent_24h"] == predicted + 1
    assert status["credits"]["left"] == 50_000 - 1_000 - status["credits"]["spent_24h"]
    assert status["batches"]["failed"] == 0 and status["batches"]["reconciled"] >= 2

    errors = cli_json(world.settings, "errors", "--json", env=env)
    assert errors["total"] == BAD_ROWS
    assert all(e["quarantined"] and e["attempts"] == 1 for e in errors["errors"])
    assert set(errors["by_code"]) == {"ORDERSYNC_VALIDATION"}
    assert all(e["field"] and "value" in e["message"] for e in errors["errors"])

    # the dry run names exactly the rows held back
    after = cli_json(world.settings, "sync", "initial", "--dry-run", "--json", env=env)
    flagged = {k for v in after["validation"]["violations"] for k in v["first_keys"]}
    assert flagged == {e["row_key"] for e in errors["errors"]}

    released = cli_json(world.settings, "retry", "--force", "--json", env=env)
    assert released == {"retried": BAD_ROWS, "unquarantined": BAD_ROWS, "made_pending": 0}
    assert cli_json(world.settings, "status", "--json", env=env)["rows"]["sendable"] == BAD_ROWS
