"""Load generation for an agent: closed loop over concurrencies, open loop over Poisson arrival rates.

- **Closed loop** (``concurrency = c``): c virtual users, each sending its next request as soon as the previous
  one returns (no think time) — what the NeMo Agent Toolkit's sizing sweep does. The load stays at exactly
  c in flight until the last *measured* request returns: requests issued after the measured ones are
  cool-down traffic, excluded, so the last measured requests do not enjoy a draining system. Then nothing
  more is sent and the cool-down requests in flight are awaited (up to the request timeout), so the next
  level starts on an idle server: a request the client abandons keeps its slot on the server until it
  completes, and would slow the next level's first measured requests.
- **Open loop** (``rate = λ``): arrivals of a Poisson process with rate λ; all intended send times are
  precomputed from a seeded generator (no drift from accumulated sleeps); a request sent more than
  ``late_threshold_s`` after its intended time counts as *late*.

Every level runs ``num_passes`` times; passes are interleaved across levels (pass 0 of every level, then
pass 1, ...) so slow drift of the system under test does not masquerade as a concurrency effect. The first
``warmup_requests`` of each level and pass are excluded. Failed requests and timeouts are counted with their
kind and never abort the sweep.

The generator checks itself, as perf_analyzer does: the share of requests sent late, the client's CPU time per
request (time spent in our code rather than waiting), and event-loop lag measured by a ticker task. It warns
when the client, not the server, is likely the bottleneck.

Latencies go into :class:`~.histogram.LatencyHistogram`, an HDR-style log-linear histogram whose buckets merge exactly
across passes and across workers; percentiles come from the merged histogram. Raw per-request rows are kept
too (for the bootstrap in :mod:`agent_flywheel.scaling.sizing`).

Every request carries a W3C ``traceparent`` with a trace of its own; the per-LLM-call figures (model, latency,
tokens) come from the spans of that trace, never from the agent's answer.

Modules: :mod:`.histogram` (the mergeable latency histogram), :mod:`.template` (an agent's request and where
its answer is; presets), :mod:`.tracecontext` (the ``traceparent`` of each request), :mod:`.requests` (one
request: its result, error kinds, the template sender, the HTTP client), :mod:`.runs` (one pass of one level,
closed or open loop), :mod:`.summaries` (the passes of a level merged, with the generator's self-check),
:mod:`.sweep` (every level and pass, and the tables it writes), :mod:`.spans` (each request's LLM calls from
its spans).
"""
