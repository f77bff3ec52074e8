"""Flow runs in this process (``flywheel run``, ``demo``, ``scale-demo``): which Prefect server records them, and a
Ctrl-C that leaves none of them ``Running``.

On Ctrl-C, Prefect 3.8 ends an in-process flow run and its subflow runs ``Crashed`` ("Execution was cancelled
by the runtime environment"), running their ``on_crashed`` hooks (the flywheel stops the NeMo jobs and
deployments it started), provided its server still answers. Two things defeat that: Prefect's own temporary
server shares the terminal's process group, so Ctrl-C stops it too and the runs stay ``Running`` in
``.flywheel/prefect`` for good; and a second Ctrl-C interrupts the crash handling itself. Hence:

- :func:`prefect_server`: the runs (and blocks) go to ``PREFECT_API_URL`` when set, else to the server
  ``flywheel server up`` started (its UI shows them, and no second server opens its database), else, at a
  terminal, to a temporary server in a process group of its own; only otherwise (no terminal, so no Ctrl-C
  to fear) to Prefect's own temporary server, started here once with a generous start-up wait
  (``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``: left to itself, on a busy machine Prefect gives up and
  leaves that process running) and stopped however the command ends, SIGTERM included.
- :class:`RunGuard`: remembers the flow runs the command starts and, after Ctrl-C, marks every one of them and
  of their subflow runs that did not end ``Cancelled`` through the API (Ctrl-C is ignored meanwhile).
- :func:`run_async`: ``asyncio.run`` for an async flow, where Ctrl-C always ends the command as interrupted.
  asyncio cancels the main task once; a cancellation absorbed on its way (seen on a busy machine, between two
  of a subflow's states) let the run go on to its end and the command exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from agent_flywheel.processes import http_health
from cli.errors import CliError, Interrupted, deliver_prefect_pending
from deployments.settings import current_server_config, running_servers_file

if TYPE_CHECKING:  # Prefect is imported only once the command chose its server
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun, State
    from prefect.flows import Flow

R = TypeVar("R")
FlowT = TypeVar("FlowT", bound="Flow[Any, Any]")
CANCELLED_MESSAGE = "Interrupted (Ctrl-C) in the `flywheel` command that ran it"


@contextlib.contextmanager
def prefect_server() -> Iterator[str]:
    """Point this process at the Prefect server that keeps its flow runs and blocks; yields its API URL.

    Call it before anything imports Prefect (Prefect reads ``PREFECT_API_URL`` once).
    """
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    cfg = current_server_config()
    # a busy server may take long to answer; one that is gone refuses at once
    if running_servers_file().exists() and http_health(f"{cfg.local_api_url}/health", timeout_s=30)()[0]:
        with _api_url(cfg.local_api_url):
            yield cfg.local_api_url
        return
    if sys.stdin is not None and sys.stdin.isatty():
        from deployments.server import TemporaryServer

        with TemporaryServer(cfg) as api_url, _api_url(api_url):
            try:
                yield api_url
            finally:
                deliver_prefect_pending()
        return
    with _prefect_temporary_server():
        yield "Prefect's temporary server"


@contextlib.contextmanager
def _prefect_temporary_server() -> Iterator[None]:
    """Prefect's own temporary server, started now and stopped when the block ends (blocks may nest: the
    outermost one owns it). Call after ``configure_local_environment()``."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    server = SubprocessASGIServer()  # the one Prefect's clients use in this process
    if server.running:  # started by an enclosing block, which stops it
        yield
        return
    timeout_s = PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
    with _sigterm_unwinds():
        try:
            try:
                server.start(timeout=timeout_s)
            except RuntimeError:
                raise CliError(
                    f"Prefect's temporary server did not answer within {timeout_s} s (a busy machine?): raise "
                    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or start a server with `flywheel server up` "
                    "and `source .flywheel/run/env.sh`"
                ) from None
            yield
        finally:
            server.stop()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While inside: SIGTERM unwinds the stack (so ``finally`` blocks run) instead of ending the process at once."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def _api_url(url: str) -> Iterator[None]:
    os.environ["PREFECT_API_URL"] = url
    try:
        yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)


CANCEL_CHECK_S = 1.0


def run_async(main: Coroutine[Any, Any, R]) -> R:
    """``asyncio.run(main)``, except that after Ctrl-C it raises :class:`KeyboardInterrupt` however ``main`` ends.

    Ctrl-C cancels ``main``; while it is not done, a cancellation that was absorbed (nothing pending on the task
    any more) is requested again every :data:`CANCEL_CHECK_S` seconds. One that is still being handled is left
    alone, so cleanup on the way out (cancel hooks, closing clients) is never cut short.
    """
    interrupted = threading.Event()

    async def guarded() -> R:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def cancel_until_done() -> None:
            if task.done():
                return
            if task.cancelling() == 0:
                task.cancel("Ctrl-C")
            loop.call_later(CANCEL_CHECK_S, cancel_until_done)

        def on_ctrl_c() -> None:
            if not interrupted.is_set():
                interrupted.set()
                cancel_until_done()

        loop.add_signal_handler(signal.SIGINT, on_ctrl_c)
        try:
            return await main
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        return asyncio.run(main)
    try:
        result = asyncio.run(guarded())
    except (asyncio.CancelledError, Exception) as exc:  # what the cancellation became on its way out
        if interrupted.is_set():
            raise KeyboardInterrupt from exc
        raise
    if interrupted.is_set():
        raise KeyboardInterrupt
    return result


class RunGuard:
    """The flow runs a command starts in process; after Ctrl-C, none of them or their subflow runs stays open."""

    def __init__(self) -> None:
        self.flow_run_ids: list[UUID] = []

    def watch(self, flow: FlowT) -> FlowT:
        """``flow``, remembering the id of each run of it once it is ``Running``."""
        return flow.with_options(on_running=[*flow.on_running_hooks, self.track_for_ctrl_c])  # type: ignore[return-value]

    def track_for_ctrl_c(self, flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
        """The ``on_running`` hook (Prefect logs its name): remember the run, to close it after Ctrl-C."""
        self.flow_run_ids.append(flow_run.id)

    def run(self, call: Callable[[], R]) -> R:
        """``call()``; on Ctrl-C, close the runs it left open, then raise :class:`Interrupted` saying how they ended."""
        try:
            return call()
        except KeyboardInterrupt:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # closing takes a moment: let it finish
            try:
                summary = self.close_unfinished()
            finally:
                signal.signal(signal.SIGINT, previous)
            raise Interrupted(summary) from None

    def close_unfinished(self) -> str:
        """Mark every watched run and its subflow runs (all levels) that are not final ``Cancelled``; say how
        each ended."""
        if not self.flow_run_ids:
            return "no flow run had started"
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelled

        try:
            with get_client(sync_client=True) as client:
                runs = _with_subflow_runs(client, self.flow_run_ids)
                closed = 0
                for run in runs:
                    if run.state is None or not run.state.is_final():
                        client.set_flow_run_state(run.id, Cancelled(message=CANCELLED_MESSAGE), force=True)
                        closed += 1
        except Exception as exc:  # the server is gone: say so, the command is being interrupted anyway
            return f"could not record how its flow runs ended ({type(exc).__name__}: {exc})"
        ended = sorted({str(run.state.name) for run in runs if run.state is not None and run.state.is_final()})
        states = "/".join([*ended, *(["Cancelled"] if closed and "Cancelled" not in ended else [])])
        subflows = len(runs) - len(self.flow_run_ids)
        return f"{len(self.flow_run_ids)} flow run(s) and {subflows} subflow run(s) ended {states}" + (
            f" ({closed} marked Cancelled here)" if closed else ""
        )


def _with_subflow_runs(client: SyncPrefectClient, ids: list[UUID]) -> list[FlowRun]:
    """The flow runs ``ids`` and every subflow run under them, page by page (at most 200 a page)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    found: dict[UUID, FlowRun] = {}
    level = _all_pages(client, FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    while level:
        found.update({run.id: run for run in level})
        parents = [run.id for run in level]
        children = _all_pages(client, FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=parents)))
        level = [run for run in children if run.id not in found]
    return list(found.values())


def _all_pages(client: SyncPrefectClient, flow_runs: Any) -> list[FlowRun]:
    runs: list[FlowRun] = []
    while True:
        page = client.read_flow_runs(flow_run_filter=flow_runs, limit=200, offset=len(runs))
        runs.extend(page)
        if len(page) < 200:
            return runs
