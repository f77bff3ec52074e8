"""A trivial flow for ``test_schedules_real_server.py``: deployed on an interval schedule and run by a worker."""

from __future__ import annotations

from prefect import flow


@flow(name="schedule-probe")
def schedule_probe() -> str:
    """Does nothing but finish: the test only checks that the schedule made a run and the worker ran it."""
    return "ran"
