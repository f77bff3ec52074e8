"""The scaling lifecycle's functional core: will the agent hold its users, on how many GPUs, and is a rollout safe?

- :mod:`.profiling`: an agent's traces → per-step statistics, critical path, bottleneck, Gantt chart;
- :mod:`.loadgen`: closed- and open-loop load that checks itself, latencies in mergeable histograms;
- :mod:`.sizing`: a sweep → the largest concurrency meeting the SLO, GPUs in whole replicas with an interval;
- :mod:`.rollout`: canary vs baseline per stage, burn rates, promote | hold | rollback;
- :mod:`.otlp`: an OTLP/HTTP receiver (protobuf and JSON) and OTLP JSON lines files: where a run's spans come from;
- :mod:`.profile_run`, :mod:`.sweep_run`: a profile and a sweep against a live agent, their spans by trace id;
- :mod:`.inputs`, :mod:`.agent_admin`, :mod:`.outcomes`, :mod:`.reports`, :mod:`.jsonable`, :mod:`.blocking`:
  the example inputs, the demo agent's admin API, what each stage produced, the markdown the flows show,
  plain JSON, and running the async core from sync code.

No Prefect here: ``tasks/`` wraps these modules, ``flows/`` composes the tasks.
"""
