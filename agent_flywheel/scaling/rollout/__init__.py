"""Rollout check: canary vs baseline SLIs, error-budget burn rates, a decision, from the traffic each served.

The observations come from what the agent's users really got (:mod:`.observed`: the agent's spans, split by the
model that served each request, judged over a time window by :mod:`.check`), or, for demos, from simulated
users (:mod:`.traffic`). Who shifts users to the canary is a pluggable router (:mod:`.routers`: ``none``, observe
only, by default). :mod:`.service` answers the check over HTTP for rollout engines (Argo Rollouts' web metric).

Input: per-request observations ``(t_s, variant, ok, latency_s, quality | None)`` with ``t_s`` in seconds since
the rollout began and ``variant`` ``"baseline"`` or ``"canary"``. Stages (``RolloutStage``: weight, duration)
follow each other in time. Each stage ends in ``promote`` (go to the next stage), ``hold`` (not enough data, or
borderline: a human should look, like Argo Rollouts' *Inconclusive*) or ``rollback``, with reasons.

**SLIs**, on the canary's own requests (so the verdict does not depend on its traffic weight):

- errors: bad = a failed request; error budget ``B = 1 - availability``;
- latency: bad = a successful request slower than ``p95_latency_s``; budget 5 % (a p95 target);
- quality, where sampled: mean score against ``min_quality``.

**Multi-window burn rates** (Google SRE workbook): ``burn = bad ratio / B``. The workbook's page rules for a
30-day budget are 14.4× over 1 h *and* 5 min (2 % of the budget in an hour) and 6× over 6 h *and* 30 min
(5 % in six hours), with thresholds ``f × period / long window``; we derive the thresholds the same way from
``RolloutSLO.slo_period_s`` (so 14.4 and 6 for 30 days). A stage is much shorter than 6 h, so the **windows
are scaled, the thresholds are not**: every window is multiplied by ``k = min(1, stage_duration / 6 h)``, so
the slow rule's long window is the whole stage and all ratios of the workbook (short = long / 12, fast long =
slow long / 6) are kept. A burn rate is a rate — "at this error ratio the monthly budget is gone in 50 h" —
and does not change meaning with the window length; shrinking the windows only trades evidence for speed,
which is why a window must also hold a minimum number of canary requests before it may fire (low-weight
stages otherwise alarm on one error). The rules are evaluated every half short window through the stage;
a rule that fired at any time rolls the stage back (the canary burned budget while users were on it).

**Canary vs baseline**, like Kayenta / Flagger: Fisher's exact test (one-sided) on error counts, Mann-Whitney U
(one-sided, normal approximation with tie correction) on latency and on quality. A significant *and*
material regression that still meets the SLO is a ``hold``; an SLO breach beyond statistical doubt (Wilson
bound) is a ``rollback``; a breach within doubt is a ``hold``.

Modules: :mod:`.observations` (what one request says), :mod:`.policy` (the burn rules and the knobs),
:mod:`.statistics` (Wilson, Fisher, Mann-Whitney), :mod:`.burn_rates`, :mod:`.stages` (one stage judged),
:mod:`.report` (the stages walked in order), :mod:`.observed` (observations from spans), :mod:`.check` (a window
of observed traffic judged), :mod:`.window` (durations and instants), :mod:`.routers`, :mod:`.service` (``GET
/check``), :mod:`.traffic` (synthetic traffic through the demo agent's router).
"""
