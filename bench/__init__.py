"""Benchmarks of agent-flywheel: run with ``make bench`` (``python -m bench``); results in docs/benchmarks.md.

Modules: :mod:`bench.data` (synthetic log records), :mod:`bench.extraction` (log store and dataset build
against the blueprint's naive pipeline and a JSON-parse bound), :mod:`bench.loadgen_bench` (load generator
against a zero-latency endpoint and locust), :mod:`bench.sizing_accuracy` (GPU estimates against the NIM
simulator's exact capacity), :mod:`bench.flywheel_overhead` (demo wall time, orchestration share, cost of a
candidate), :mod:`bench.report` (the document). This package's ``__init__`` and :mod:`bench.measure` use
the standard library only, so a measurement can run under another interpreter (one with locust).
"""
