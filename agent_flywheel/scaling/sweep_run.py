"""A load sweep against a live agent, with each measured request's LLM calls from the spans of its trace.

Why here, above :mod:`.loadgen` and :mod:`.otlp`: the generator knows nothing about where spans come from, and
the receiver nothing about load; this module runs the one and then reads the other.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from agent_flywheel.config import LoadSweepConfig
from agent_flywheel.scaling.blocking import run_coroutine
from agent_flywheel.scaling.loadgen.requests import SendFn
from agent_flywheel.scaling.loadgen.runs import LevelRun
from agent_flywheel.scaling.loadgen.spans import SpanMatch, attach_llm_calls, expected_traces
from agent_flywheel.scaling.loadgen.sweep import SweepResult, run_sweep
from agent_flywheel.scaling.otlp.sources import SpanSources


def sweep_with_spans(
    send: SendFn,
    client: Callable[[int], aiohttp.ClientSession],
    config: LoadSweepConfig,
    sources: SpanSources,
    span_wait_s: float,
    on_run: Callable[[LevelRun], None] | None = None,
) -> tuple[SweepResult, SpanMatch]:
    """Run the sweep (``client(max_connections)`` opens the generator's session), wait for the spans of its
    measured requests, and give each its LLM calls; blocking."""
    biggest = max([*config.concurrencies, 1])

    async def main() -> SweepResult:
        async with client(max(256, 2 * biggest)) as session:
            return await run_sweep(send, session, config, on_run=on_run)

    result = run_coroutine(main())
    sources.wait_for(expected_traces(result), span_wait_s)
    return result, attach_llm_calls(result, sources.store.spans_of)
