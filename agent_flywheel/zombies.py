"""When a flow run that Prefect still shows ``Running`` is dead: its heartbeats stopped.

A run killed outright (SIGKILL, an evicted pod, a lost node) stays ``Running``: nothing is left to report
its end, and Prefect's Kubernetes worker runs no ``on_crashed`` hook. The Prefect API can still tell. With
``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` set (``prefect.yaml``'s work pool and the ``flywheel`` command line set
60 s; Prefect's minimum is 30 s), the flow engine emits ``prefect.flow-run.heartbeat`` for every flow run,
subflows included, from a thread of the run's own process, whatever its event loop is busy with. The rule:

    A flow run is a **zombie** when it is ``Running``, it has sent at least one heartbeat (so heartbeats are
    on where it runs), and neither its last heartbeat nor its last state change is newer than ``after``
    (10 minutes by default: ten missed beats at 60 s; 0 takes any run whose last sign of life is past).

A run that never sent a heartbeat is not judged (heartbeats are off where it runs: no evidence either way,
and unsure means alive). The worker that started a run is no evidence: a Kubernetes worker lives on while
the pod of one of its runs is killed, and a run started from the command line has no worker at all.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

#: The event the flow engine emits for a live flow run (Prefect's name).
HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"
#: The zombie limit when none is given: ten missed heartbeats at 60 s.
DEFAULT_ZOMBIE_AFTER = timedelta(minutes=10)


@dataclasses.dataclass(frozen=True)
class RunActivity:
    """What the Prefect API says about a flow run's signs of life."""

    run_id: str
    name: str
    state_type: str
    state_since: datetime | None
    last_heartbeat: datetime | None


def _minutes(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 60:.1f} min"


def zombie_reason(activity: RunActivity, *, now: datetime, after: timedelta = DEFAULT_ZOMBIE_AFTER) -> str | None:
    """Why the run is a zombie (the message of the ``Crashed`` state it is marked with), or None when it is not
    one, or cannot be judged (see the module)."""
    if after < timedelta(0):
        raise ValueError(f"the zombie limit must not be negative, got {after}")
    if activity.state_type != "RUNNING" or activity.last_heartbeat is None:
        return None
    latest = max(t for t in (activity.last_heartbeat, activity.state_since) if t is not None)
    if now - latest <= after:
        return None
    return (
        f"marked crashed by the reaper: Running, but no heartbeat for {_minutes(now - activity.last_heartbeat)} "
        f"(last at {activity.last_heartbeat.isoformat(timespec='seconds')}; the limit is {_minutes(after)}): its "
        "process is gone (killed, evicted or lost with its machine)"
    )
