"""The Celery plumbing with a real worker process and a real broker, observed through PostgreSQL."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator

import psycopg2
import pytest
from celery import Celery
from kombu.exceptions import EncodeError

from tests.fixtures.celery import BeatProcess, CeleryTestEnv, WorkerFactory, WorkerProcess
from tests.tasks.conftest import ProbeDb

PROBE = "ordersync.probe"


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


def test_round_trip_is_observed_in_postgres_with_ids_on_log_lines(
    celery_worker: WorkerProcess, celery_sender: Celery, probe_db: ProbeDb
) -> None:
    sent = celery_sender.send_task(
        PROBE, args=probe_db.args("round-trip"), kwargs={"run_id": "r-7", "batch_id": "b-42"}
    )
    wait_until(lambda: probe_db.effects("round-trip"), what="the probe's effect")

    ((task_id, _applied_at),) = probe_db.effects("round-trip")
    ((attempt_task_id, retries, pid, _started, finished),) = probe_db.attempts("round-trip")
    assert task_id == attempt_task_id == sent.id
    assert retries == 0 and finished is not None
    assert pid in celery_worker.child_pids()
    celery_worker.wait_for_log(
        f"task={sent.id} run=r-7 batch=b-42 tests.fixtures.probe_app: probe round-trip"
    )


def test_only_json_goes_through(
    celery_worker: WorkerProcess, celery_sender: Celery, probe_db: ProbeDb
) -> None:
    with pytest.raises(EncodeError):
        celery_sender.send_task(PROBE, args=[*probe_db.args("not-json"), object()])

    # A pickled message reaches the queue but the worker refuses to open it.
    celery_sender.send_task(PROBE, args=probe_db.args("pickled"), serializer="pickle")
    celery_sender.send_task(PROBE, args=probe_db.args("after-pickled"))
    wait_until(lambda: probe_db.effects("after-pickled"), what="the JSON message after it")

    assert probe_db.attempts("pickled") == []
    assert probe_db.attempts("not-json") == []
    celery_worker.wait_for_log("ContentDisallowed", timeout=5)


def test_countdown_and_self_rescheduling(
    celery_worker: WorkerProcess, celery_sender: Celery, probe_db: ProbeDb
) -> None:
    sent_at = time.time()
    celery_sender.send_task(PROBE, args=probe_db.args("countdown"), countdown=2)
    celery_sender.send_task(
        PROBE, args=probe_db.args("polled"), kwargs={"polls": 2, "poll_countdown": 1.0}
    )
    wait_until(lambda: probe_db.effects("countdown"), what="the delayed probe")
    wait_until(lambda: probe_db.effects("polled"), what="the polled probe")

    ((_, applied_at),) = probe_db.effects("countdown")
    assert applied_at.timestamp() - sent_at >= 2.0  # type: ignore[attr-defined]

    polled = probe_db.attempts("polled")
    assert len(polled) == 3  # two polls re-scheduled, the third applies the effect
    assert len({row[0] for row in polled}) == 3  # each poll is a new message, not a retry
    assert all(row[1] == 0 for row in polled)  # … so it does not count against max_retries
    starts = [row[3].timestamp() for row in polled]  # type: ignore[attr-defined]
    assert all(later - earlier >= 0.95 for earlier, later in zip(starts, starts[1:], strict=False))


def test_transient_errors_are_retried_with_backoff_up_to_max_retries(
    celery_worker: WorkerProcess, celery_sender: Celery, probe_db: ProbeDb
) -> None:
    flaky = celery_sender.send_task(PROBE, args=probe_db.args("flaky"), kwargs={"fail_times": 2})
    broken = celery_sender.send_task(
        PROBE, args=probe_db.args("broken"), kwargs={"fail_times": 99}
    )
    fatal = celery_sender.send_task(
        PROBE, args=probe_db.args("fatal"), kwargs={"fail_times": 1, "fatal": True}
    )
    wait_until(lambda: probe_db.effects("flaky"), what="the flaky probe to succeed")
    celery_worker.wait_for_log(f"[{broken.id}] raised unexpected: OperationalError", timeout=30)
    celery_worker.wait_for_log(f"[{fatal.id}] raised unexpected: ProbeFatalError", timeout=5)

    assert [row[1] for row in probe_db.attempts("flaky")] == [0, 1, 2]
    assert {row[0] for row in probe_db.attempts("flaky")} == {flaky.id}
    broken_attempts = probe_db.attempts("broken")
    assert [row[1] for row in broken_attempts] == [0, 1, 2, 3]  # probe's max_retries = 3
    assert probe_db.effects("broken") == []
    starts = [row[3].timestamp() for row in broken_attempts]  # type: ignore[attr-defined]
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert all(gap < 2.0 + 1.5 for gap in gaps), gaps  # full jitter below retry_backoff_max
    assert len(probe_db.attempts("fatal")) == 1  # not in the transient family: no retry
    assert probe_db.effects("fatal") == []


@pytest.fixture
def gate(probe_db: ProbeDb) -> Iterator[Callable[[], int]]:
    """Hold a PostgreSQL advisory lock the probe waits on; call the fixture's value to release."""
    key = int.from_bytes(os.urandom(4), "big")
    conn = psycopg2.connect(probe_db.dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (key,))
    released = False

    def release() -> int:
        nonlocal released
        if not released:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
            released = True
        return key

    release.key = key  # type: ignore[attr-defined]
    yield release
    release()
    conn.close()


def _redelivery_after_sigkill(
    env: CeleryTestEnv,
    start_worker: WorkerFactory,
    sender: Celery,
    probe_db: ProbeDb,
    gate: Callable[[], int],
    key: str,
) -> float:
    first = start_worker(env)
    sent_at = time.monotonic()
    sent = sender.send_task(PROBE, args=probe_db.args(key), kwargs={"gate": gate.key})  # type: ignore[attr-defined]
    wait_until(lambda: probe_db.attempts(key), what="the probe to start")
    wait_until(lambda: probe_db.effects(key), what="the effect before the gate")
    first.kill()  # mid-task: effect written, not finished, not acked
    gate()
    second = start_worker(env)
    wait_until(lambda: len(probe_db.attempts(key)) == 2 and probe_db.attempts(key)[1][4],
               timeout=60, what="the redelivered probe to finish")  # fmt: skip
    done_after = time.monotonic() - sent_at

    attempts = probe_db.attempts(key)
    assert [row[0] for row in attempts] == [sent.id, sent.id]  # the same message, again
    assert attempts[0][4] is None and attempts[1][4] is not None
    assert probe_db.effects(key) == [(sent.id, probe_db.effects(key)[0][1])]  # once in effect
    assert second.alive() and not first.alive()
    return done_after


def test_worker_killed_mid_task_redelivers_on_redis(
    celery_env: CeleryTestEnv,
    celery_worker_factory: WorkerFactory,
    celery_sender: Celery,
    probe_db: ProbeDb,
    gate: Callable[[], int],
) -> None:
    # Redis has no connection-bound delivery: the killed worker's message comes back only after
    # the visibility timeout, so this worker runs with 3 s (production: 3600 s) and sweeps each 1 s.
    env = celery_env.with_(visibility_timeout=3, restore_interval=1)
    seconds = _redelivery_after_sigkill(
        env, celery_worker_factory, celery_sender, probe_db, gate, "killed-redis"
    )
    assert seconds >= 3.0  # not before the visibility timeout, counted from the delivery


def test_worker_killed_mid_task_redelivers_on_rabbitmq(
    celery_worker_factory: WorkerFactory, probe_db: ProbeDb, gate: Callable[[], int]
) -> None:
    # RabbitMQ hands an unacked message out again as soon as the consumer's connection drops.
    from tests.fixtures.celery import PROBE_APP, cleanup_celery_env, make_celery_env

    env = make_celery_env(broker_url="amqp://guest:guest@127.0.0.1:5672//", app=PROBE_APP)
    sender = env.make_app()
    try:
        _redelivery_after_sigkill(
            env, celery_worker_factory, sender, probe_db, gate, "killed-amqp"
        )
    finally:
        sender.close()
        cleanup_celery_env(env)


def test_pool_process_killed_mid_task_is_requeued_by_its_worker(
    celery_worker: WorkerProcess, celery_sender: Celery, probe_db: ProbeDb, gate: Callable[[], int]
) -> None:
    sent = celery_sender.send_task(PROBE, args=probe_db.args("child-killed"),
                                   kwargs={"gate": gate.key})  # type: ignore[attr-defined]  # fmt: skip
    wait_until(lambda: probe_db.effects("child-killed"), what="the probe to reach the gate")
    child_pid = probe_db.attempts("child-killed")[0][2]
    os.kill(int(child_pid), signal.SIGKILL)  # type: ignore[call-overload]
    gate()
    wait_until(lambda: len(probe_db.attempts("child-killed")) == 2
               and probe_db.attempts("child-killed")[1][4], what="the requeued probe")  # fmt: skip

    first, second = probe_db.attempts("child-killed")
    assert first[0] == second[0] == sent.id and first[2] != second[2]
    assert len(probe_db.effects("child-killed")) == 1
    assert celery_worker.alive()  # task_reject_on_worker_lost: the main process requeued it


def test_beat_starts_and_shuts_down_cleanly(
    celery_env: CeleryTestEnv, celery_beat_factory: Callable[..., BeatProcess]
) -> None:
    beat = celery_beat_factory()
    assert beat.alive(), beat.log()
    beat.proc.send_signal(signal.SIGTERM)
    assert beat.proc.wait(timeout=15) == 0, beat.log()
