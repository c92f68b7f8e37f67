"""The initial-sync steps as Celery task names, and how one is sent (by name, with ids only).

Both task modules send steps (``tasks.initial`` hands each outcome on, ``tasks.ongoing`` sends an
interval run's bulk batches to the chain) with the app that runs them, so neither imports the
other.
"""

from __future__ import annotations

from celery import Celery

from pipeline.initial_sync import RUN_STEPS, Step

TASK_NAMES: dict[Step, str] = {step: f"ordersync.{step.value}" for step in Step}


def send_step(
    app: Celery,
    step: Step,
    *,
    run_id: int | None = None,
    batch_id: int | None = None,
    countdown: float = 0.0,
) -> None:
    """Send one step: EXTRACT and UPSERT take the run id, the others the batch id (and the run
    id, when known, for the log lines only)."""
    kwargs: dict[str, int | None] = {"run_id": run_id}
    if step not in RUN_STEPS:
        kwargs = {"batch_id": batch_id, **({"run_id": run_id} if run_id is not None else {})}
    app.send_task(TASK_NAMES[step], kwargs=kwargs, countdown=countdown or None)
