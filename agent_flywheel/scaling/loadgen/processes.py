"""Generator processes on one machine: each drives its share of a level; the parent merges what they send back.

Why processes: a generator is one event loop on one core; past about a thousand agent-shaped users its own
delays (requests sent late, answers read late) become part of what it measures. ``n`` processes, started
with ``spawn`` (a clean interpreter each: no copy of the parent's threads, receiver or locks), each hold a
client and wait for work. For every pass of every level the parent:

1. sends each process its :class:`~.shares.GeneratorShare`, all with the same start time, a moment ahead
   (the processes are already idle and connected, so a fraction of a second is enough);
2. waits until every process has finished its *measured* requests ("done"); each keeps its load on meanwhile
   (cool-down traffic, not measured), so no generator's last requests see a server the others have left;
3. releases them all, and receives each one's run as JSON: its histogram, counters, self-check and rows
   (with the trace ids, so the LLM calls are matched from the spans once, here).

A process that fails sends its traceback; one that dies is noticed by its sentinel. Either way the others
are released and :class:`GeneratorError` names the generator. Processes are stopped when the pool closes.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

from agent_flywheel.scaling.loadgen.generator import GeneratorSetup, run_share
from agent_flywheel.scaling.loadgen.runs import LevelRun
from agent_flywheel.scaling.loadgen.shares import GeneratorShare

START_LEAD_S = 0.5  # how far ahead of "now" a level's start time is set for processes already waiting
READY_TIMEOUT_S = 120.0  # a fresh interpreter importing numpy and aiohttp on a busy machine


class GeneratorError(RuntimeError):
    """A generator process failed or died; ``details`` holds its traceback, when it sent one."""

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.details = details


# --------------------------------------------------------------------------------------------------
# The child
# --------------------------------------------------------------------------------------------------


async def _receive(conn: Connection) -> Any:
    """The next message from the parent, without blocking the event loop (the load keeps running)."""
    return await asyncio.to_thread(conn.recv)


async def _serve(conn: Connection, setup: GeneratorSetup, biggest_share: int) -> None:
    send = setup.make_send()
    async with setup.client(biggest_share) as client:
        conn.send(("ready", None))
        while True:
            message, payload = await _receive(conn)
            if message == "stop":
                return
            share = GeneratorShare.from_dict(payload)

            async def hold() -> None:
                conn.send(("done", None))
                await _receive(conn)  # "release"

            try:
                run = await run_share(
                    send,
                    client,
                    share,
                    timeout_s=setup.timeout_s,
                    late_threshold_s=setup.late_threshold_s,
                    max_in_flight=setup.max_in_flight,
                    hold=hold,
                )
            except Exception:
                conn.send(("error", traceback.format_exc()))
                continue
            conn.send(("report", run.to_dict()))


def generator_main(conn: Connection, setup: GeneratorSetup, biggest_share: int) -> None:
    """A generator process's entry point: serve shares until told to stop."""
    try:
        asyncio.run(_serve(conn, setup, biggest_share))
    except Exception:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------------
# The parent
# --------------------------------------------------------------------------------------------------


class GeneratorProcesses:
    """``processes`` generator processes, used as ``with GeneratorProcesses(...) as pool: pool.drive(shares)``.

    ``biggest_share`` sizes each process's connection pool (the most users one process will drive).
    """

    def __init__(self, setup: GeneratorSetup, processes: int, biggest_share: int = 1) -> None:
        if processes < 1:
            raise ValueError("processes must be >= 1")
        self.setup = setup
        self.processes = processes
        self.biggest_share = biggest_share
        self._workers: list[tuple[BaseProcess, Connection]] = []

    def __enter__(self) -> GeneratorProcesses:
        context = multiprocessing.get_context("spawn")
        try:
            for _ in range(self.processes):
                parent_end, child_end = context.Pipe()
                process = context.Process(
                    target=generator_main,
                    args=(child_end, self.setup, self.biggest_share),
                    name=f"load-generator-{len(self._workers)}",
                    daemon=True,
                )
                process.start()
                child_end.close()
                self._workers.append((process, parent_end))
            for g in range(len(self._workers)):
                self._expect(g, "ready", READY_TIMEOUT_S)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Ask every process to stop, then end any that does not (only the processes this pool started)."""
        for process, conn in self._workers:
            if process.is_alive():
                try:
                    conn.send(("stop", None))
                except OSError:
                    pass
        for process, conn in self._workers:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)
            conn.close()
        self._workers = []

    def _expect(self, g: int, message: str, timeout_s: float | None = None) -> Any:
        """The next message from generator ``g``, which must be ``message``; a failure or death raises."""
        process, conn = self._workers[g]
        ready = wait([conn, process.sentinel], timeout=timeout_s)
        if not ready:
            raise GeneratorError(f"generator {g} sent nothing within {timeout_s:.0f} s (expected {message!r})")
        if conn not in ready and not conn.poll():
            raise GeneratorError(f"generator {g} (pid {process.pid}) exited with code {process.exitcode}")
        try:
            kind, payload = conn.recv()
        except EOFError:
            process.join(timeout=5)
            raise GeneratorError(f"generator {g} (pid {process.pid}) exited with code {process.exitcode}") from None
        if kind == "error":
            last = str(payload).strip().splitlines()[-1] if str(payload).strip() else "no traceback"
            raise GeneratorError(f"generator {g} failed: {last}", details=str(payload))
        if kind != message:
            raise GeneratorError(f"generator {g} sent {kind!r}, expected {message!r}")
        return payload

    def drive(self, shares: Sequence[GeneratorShare]) -> list[LevelRun]:
        """Run one pass of one level: share ``g`` on process ``g``; returns the runs in generator order.

        Every share must have the same start time; the generators are released together once all have
        finished their measured requests.
        """
        if len(shares) > len(self._workers):
            raise ValueError(f"{len(shares)} shares for {len(self._workers)} generator processes")
        if len({s.start_at for s in shares}) > 1:
            raise ValueError("the shares of one level must have one start time")
        for g, share in enumerate(shares):
            self._workers[g][1].send(("run", share.to_dict()))
        failure: GeneratorError | None = None
        held: list[int] = []
        for g in range(len(shares)):
            try:
                self._expect(g, "done")
                held.append(g)
            except GeneratorError as exc:
                failure = failure or exc
        for g in held:
            self._workers[g][1].send(("release", None))
        runs: list[LevelRun] = []
        for g in held:
            try:
                runs.append(LevelRun.from_dict(self._expect(g, "report")))
            except GeneratorError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return runs


def start_time(lead_s: float = START_LEAD_S) -> float:
    """A level's common start time for processes already waiting: ``lead_s`` from now (epoch seconds)."""
    return time.time() + lead_s
