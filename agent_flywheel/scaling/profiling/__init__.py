"""Profiling one agent application from its traces: span trees, per-step statistics, critical path, Gantt chart.

- :mod:`.spans`: the data model (a span; a trace as a tree by parent id, repaired by time containment);
- :mod:`.critical_path`: which spans the root waited on, instant by instant;
- :mod:`.conventions`: what a span is (LLM call, tool call, ...), its model and tokens, from the GenAI semantic
  conventions (current and older names), OpenInference, or the NeMo Agent Toolkit's attributes;
- :mod:`.otlp`, :mod:`.nat`, :mod:`.files`: readers of OTLP JSON, of the toolkit's ``all_requests_profiler_traces.json``
  and ``standardized_data_all.csv``, and of trace files in any of these formats;
- :mod:`.report`: per-step statistics, LLM calls, the bottleneck, the report;
- :mod:`.gantt`: one request drawn as a Gantt chart.

A profile run against a live agent is :mod:`agent_flywheel.scaling.profile_run`.
"""
