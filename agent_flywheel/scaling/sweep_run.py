"""A load sweep against a live agent, with each measured request's LLM calls from the spans of its trace.

Why here, above :mod:`.loadgen` and :mod:`.otlp`: the generator knows nothing about where spans come from, and
the receiver nothing about load; this module runs the one and then reads the other. The generators may be
this process, several processes (``load_sweep.processes``) or Prefect workers (a ``drive`` from the task
layer); either way the spans are matched here, once, against the trace ids of every generator's requests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from agent_flywheel.config import LoadSweepConfig
from agent_flywheel.scaling.blocking import run_coroutine
from agent_flywheel.scaling.loadgen.generator import GeneratorSetup
from agent_flywheel.scaling.loadgen.processes import GeneratorProcesses, start_time
from agent_flywheel.scaling.loadgen.runs import LevelRun
from agent_flywheel.scaling.loadgen.spans import SpanMatch, attach_llm_calls, expected_traces
from agent_flywheel.scaling.loadgen.sweep import Drive, SweepResult, run_split_sweep, run_sweep
from agent_flywheel.scaling.otlp.sources import SpanSources


def run_generators(
    setup: GeneratorSetup,
    config: LoadSweepConfig,
    *,
    on_run: Callable[[LevelRun], None] | None = None,
    workers: Drive | None = None,
) -> SweepResult:
    """The sweep from one process, from ``config.processes`` processes, or from ``config.workers`` workers.

    ``workers`` runs one level-pass's shares on Prefect workers; their start time is ``config.start_lead_s``
    ahead (they have no way to say they are ready). Processes are started once for the whole sweep and say
    when they are, so a fraction of a second is enough for them.
    """
    biggest = max([*config.concurrencies, 1])
    if workers is not None:
        return run_split_sweep(
            workers, config, config.workers, lambda: time.time() + config.start_lead_s, on_run=on_run
        )
    if config.processes > 1:
        with GeneratorProcesses(setup, config.processes, math.ceil(biggest / config.processes)) as pool:
            return run_split_sweep(pool.drive, config, config.processes, start_time, on_run=on_run)

    async def main() -> SweepResult:
        async with setup.client(biggest) as session:
            return await run_sweep(
                setup.make_send(),
                session,
                config,
                late_threshold_s=setup.late_threshold_s,
                max_in_flight=setup.max_in_flight,
                on_run=on_run,
            )

    return run_coroutine(main())


def sweep_with_spans(
    setup: GeneratorSetup,
    config: LoadSweepConfig,
    sources: SpanSources,
    span_wait_s: float,
    *,
    on_run: Callable[[LevelRun], None] | None = None,
    workers: Drive | None = None,
) -> tuple[SweepResult, SpanMatch]:
    """Run the sweep (see :func:`run_generators`), wait for the spans of its measured requests, and give each
    its LLM calls; blocking."""
    result = run_generators(setup, config, on_run=on_run, workers=workers)
    sources.wait_for(expected_traces(result), span_wait_s)
    return result, attach_llm_calls(result, sources.store.spans_of)
