"""Sizing: from a load sweep to the largest concurrency that meets the latency SLO, and GPUs with an interval.

The method, and why it differs from the NeMo Agent Toolkit's ``nat sizing calc``:

1. **Measured bracketing.** Per level, p95 of workflow latency (failed or timed-out requests count as
   infinitely slow: they did not meet any target) and optionally p95 of LLM-call latency. The answer lies
   between the highest level that meets the target below the first level that fails and that failing
   level. Levels above the first failure that pass again are reported as noise and not trusted. The
   toolkit instead fits one straight line through all levels after IQR outlier removal, which tends to
   delete the knee — the very points that decide the answer.
2. **Interpolation inside the bracket with a capacity model.** We fit the asymptotic-bounds model of a
   closed system, ``R(N) = max(D, N/X - Z)``, written as the hinge ``D + s·max(0, N - K)`` (``X = 1/s``,
   knee ``K``, ``Z = s·K - D``), by weighted least squares on relative error with a grid search over the
   knee. Inside the bracket we interpolate in the model's shape but anchored at the two measured points,
   so the answer always honours the measurements; if the model is flat across the bracket we interpolate
   ``log p95`` linearly. No point is ever dropped as an outlier.
3. **Unreachable is an answer.** If the lowest level already misses the target: ``reachable=False`` with the
   reason. If every level meets it, C* is *at least* the highest level (used for the GPU count, so the GPU
   count is an upper bound); the capacity model's extrapolation is reported separately and flagged.
4. **Replicas, not whole users.** The sweep ran on ``test_gpus`` GPUs holding ``test_gpus / gpus_per_replica``
   replicas (default: the system under test is one replica); C* per replica is C* over that count. With
   requests balanced over replicas (the default) a replica carries a fraction of users as well as a whole
   number: ``replicas = ceil(users / C* per replica)``; only users pinned to replicas (sticky sessions) make it
   ``ceil(users / floor(C* per replica))``. ``GPUs = replicas × gpus_per_replica`` (:mod:`.replicas`).
5. **An interval from the data actually available** (:mod:`.intervals`). Per level, the wider of a bootstrap
   that resamples passes and then requests (drift between passes shows) and distribution-free order-statistic
   bounds on the p95 (too few requests show: below 59 requests a p95 has no upper bound at 90 %, and the
   answer warns, naming the level, its count and the minimum). p95 never falls as load rises, so a
   well-measured level bounds a thin one. C*'s low end is where the levels' high p95s cross the target, its
   high end where the low ones do; an end the data cannot fix is left open (None) with its reason. A
   per-level table (one p95 per level, no requests) has no confidence interval, and the answer is never a
   point either: the measured levels around C* (the last meeting every target, the first missing one)
   bracket it if each p95 is taken as exact, and the answer labels that a measured bracket.

Throughput at the SLO is interpolated between the bracket's measured throughputs (or from Little's law,
``X = N / mean R``, in a closed loop without think time); cost per 1,000 workflows is
``price_per_gpu_hour × test_gpus / (X × 3600) × 1000``, the cost when the system under test runs at C*.

Modules: :mod:`.quantiles` (quantiles where a failure is infinitely slow), :mod:`.sweeps` (the measured sweep,
from a load generator's result or a CSV), :mod:`.capacity` (the capacity model and its fit), :mod:`.bracketing`
(where a p95 curve crosses its target), :mod:`.nat_linear` (the toolkit's straight line, for comparison),
:mod:`.replicas` (what a replica is), :mod:`.intervals` (each level's p95 interval), :mod:`.result` (the answer),
:mod:`.solve` (the method), :mod:`.confirm` (re-measuring at the recommended load), :mod:`.plots`.
"""
