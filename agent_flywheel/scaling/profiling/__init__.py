"""Profiling one agent application from its traces: span trees, per-step statistics, critical path, Gantt chart.

- :mod:`.spans`: the data model (a span, a trace as a tree by parent id);
- :mod:`.critical_path`: which spans the root waited on, instant by instant;
- :mod:`.otlp`, :mod:`.nat`, :mod:`.files`: readers of OpenTelemetry OTLP JSON, of the NeMo Agent Toolkit's
  ``all_requests_profiler_traces.json``, and of trace files in either format;
- :mod:`.report`: per-step statistics, LLM calls, the bottleneck, the report;
- :mod:`.gantt`: one request drawn as a Gantt chart;
- :mod:`.collect`: a profile run's traces, from a receiver and the agent's spans file.

LLM calls are recognised by the OpenTelemetry GenAI semantic conventions (``gen_ai.operation.name``,
``gen_ai.request.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens``); toolkit LLM events are mapped onto
the same fields, so one code path serves both formats.
"""
