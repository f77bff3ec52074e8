"""Tests for agent_flywheel.evaluation.gate: non-inferiority on paired samples, then the cheapest candidate."""

from __future__ import annotations

import numpy as np
import pytest

from agent_flywheel.config import CustomizerConfig, NIMConfig, PromotionGateConfig
from agent_flywheel.evaluation.gate import Candidate, decide_promotion, minimum_eval_records
from agent_flywheel.evaluation.metrics import FUNCTION_NAME_AND_ARGS_ACCURACY

N = 300
TEACHER = NIMConfig(model_name="meta/llama-3.3-70b-instruct", context_length=32768, cost_per_1k_tokens=0.9)
SMALL = NIMConfig(
    model_name="meta/llama-3.2-1b-instruct",
    customization_enabled=True,
    customizer_configs=CustomizerConfig(target="meta/llama-3.2-1b-instruct@2.0"),
    cost_per_1k_tokens=0.1,
)
MEDIUM = NIMConfig(model_name="meta/llama-3.1-8b-instruct", cost_per_1k_tokens=0.2)
HUGE = NIMConfig(model_name="meta/llama-3.1-405b-instruct", cost_per_1k_tokens=5.0)


def teacher_scores(seed: int = 0, accuracy: float = 0.9) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {f"s{i}": float(v) for i, v in enumerate(rng.random(N) < accuracy)}


def degrade(scores: dict[str, float], flips: int, seed: int = 1) -> dict[str, float]:
    """The teacher's scores with ``flips`` correct samples turned wrong (a paired, slightly worse model)."""
    rng = np.random.default_rng(seed)
    correct = [k for k, v in scores.items() if v == 1.0]
    worse = dict(scores)
    for key in rng.choice(correct, size=flips, replace=False):
        worse[str(key)] = 0.0
    return worse


def gate(**overrides: object) -> PromotionGateConfig:
    return PromotionGateConfig(bootstrap_samples=500, **overrides)  # type: ignore[arg-type]


def test_cheapest_non_inferior_candidate_is_promoted() -> None:
    teacher = teacher_scores()
    scores = {
        (SMALL.model_name, "base-eval"): degrade(teacher, 60),  # far worse
        (SMALL.model_name, "customized-eval"): degrade(teacher, 2),  # as good
        (MEDIUM.model_name, "base-eval"): dict(teacher),  # as good, but bigger
    }
    decision = decide_promotion(TEACHER, teacher, [MEDIUM, SMALL], scores, gate())
    assert decision.outcome == "promoted"
    assert decision.promoted == Candidate(SMALL.model_name, "customized-eval")
    verdicts = {(r["model"], r["eval_mode"]): r["verdict"] for r in decision.rows}
    assert verdicts[(SMALL.model_name, "base-eval")] == "inferior"
    assert verdicts[(MEDIUM.model_name, "base-eval")] == "non-inferior"
    assert verdicts[(MEDIUM.model_name, "icl-eval")] == "not evaluated"


def test_lower_bound_against_the_margin_decides() -> None:
    teacher = teacher_scores()
    slightly_worse = degrade(teacher, 6)  # -0.02, well inside a 0.05 margin
    clearly_worse = degrade(teacher, 30)  # -0.10
    for candidate, margin, expected in (
        (slightly_worse, 0.05, "non-inferior"),
        (slightly_worse, 0.0, "inferior"),
        (clearly_worse, 0.05, "inferior"),
        (clearly_worse, 0.2, "non-inferior"),
    ):
        decision = decide_promotion(
            TEACHER, teacher, [SMALL], {(SMALL.model_name, "base-eval"): candidate}, gate(margin=margin)
        )
        assert decision.rows[0]["verdict"] == expected, (margin, decision.reasons[0])
        assert decision.rows[0]["low"] <= decision.rows[0]["difference"] <= decision.rows[0]["high"]


def test_an_interval_straddling_the_margin_is_not_shown_non_inferior_rather_than_inferior() -> None:
    teacher = teacher_scores()
    straddling = degrade(teacher, 15)  # -0.05 on 300 samples: the interval lies across -0.05
    decision = decide_promotion(
        TEACHER, teacher, [SMALL], {(SMALL.model_name, "base-eval"): straddling}, gate(eval_modes=["base-eval"])
    )
    row = decision.rows[0]
    assert row["low"] < -0.05 < row["high"]
    assert row["verdict"] == "non-inferiority not shown"
    assert "non-inferiority not shown (interval straddles -0.05)" in decision.reasons[0]
    assert "inferior (" not in decision.reasons[0]
    assert "| non-inferiority not shown |" in decision.to_markdown()
    assert decision.outcome == "no-candidate"


@pytest.mark.parametrize(("margin", "confidence", "expected"), [(0.05, 0.95, 61), (0.1, 0.95, 31), (0.01, 0.95, 301)])
def test_minimum_eval_records_is_where_one_lost_sample_can_still_pass(
    margin: float, confidence: float, expected: int
) -> None:
    assert minimum_eval_records(margin, confidence) == expected
    assert minimum_eval_records(0.0, confidence) == 1


@pytest.mark.parametrize(("n", "passes"), [(61, True), (40, False)])
def test_the_gate_agrees_with_minimum_eval_records(n: int, passes: bool) -> None:
    """A candidate wrong on one sample more than the teacher passes on 61 samples, not on 40 (margin 0.05)."""
    teacher = {f"s{i}": 1.0 for i in range(n)}
    one_lost = {**teacher, "s0": 0.0}
    cfg = PromotionGateConfig(eval_modes=["base-eval"], bootstrap_samples=4000)
    decision = decide_promotion(TEACHER, teacher, [SMALL], {(SMALL.model_name, "base-eval"): one_lost}, cfg)
    assert (decision.rows[0]["verdict"] == "non-inferior") is passes, decision.reasons[0]


def test_candidate_not_cheaper_than_the_teacher_is_never_promoted() -> None:
    teacher = teacher_scores()
    better = {k: 1.0 for k in teacher}
    decision = decide_promotion(TEACHER, teacher, [HUGE], {(HUGE.model_name, "base-eval"): better}, gate())
    assert decision.outcome == "no-candidate" and decision.promoted is None
    assert decision.rows[0]["verdict"] == "non-inferior"
    assert "not cheaper than the teacher" in decision.reasons[0]


def test_missing_scores_are_not_evaluated_never_a_crash() -> None:
    decision = decide_promotion(TEACHER, teacher_scores(), [SMALL, MEDIUM], {}, gate())
    assert decision.outcome == "no-candidate"
    assert len(decision.rows) == 6
    assert all(r["verdict"] == "not evaluated" for r in decision.rows)
    assert any("customization disabled" in r for r in decision.reasons)  # MEDIUM customized-eval
    assert all("not evaluated" in r for r in decision.reasons[:6])


def test_no_teacher_scores_means_no_promotion() -> None:
    decision = decide_promotion(TEACHER, None, [SMALL], {(SMALL.model_name, "base-eval"): teacher_scores()}, gate())
    assert decision.outcome == "no-candidate"
    assert decision.rows[0]["verdict"] == "not evaluated"
    assert any("no function_name_and_args_accuracy scores" in r for r in decision.reasons)


def test_no_samples_in_common_is_not_evaluated() -> None:
    decision = decide_promotion(
        TEACHER, {"a": 1.0}, [SMALL], {(SMALL.model_name, "base-eval"): {"b": 1.0}}, gate(eval_modes=["base-eval"])
    )
    assert decision.rows[0]["verdict"] == "not evaluated"
    assert "no samples in common" in decision.reasons[0]


def test_size_basis_uses_the_parameter_count() -> None:
    teacher = teacher_scores()
    scores = {(m.model_name, "base-eval"): dict(teacher) for m in (SMALL, MEDIUM)}
    decision = decide_promotion(TEACHER, teacher, [MEDIUM, SMALL], scores, gate(cost_basis="size"))
    assert decision.promoted == Candidate(SMALL.model_name, "base-eval")
    assert {r["model"]: r["cost"] for r in decision.rows} == {SMALL.model_name: 1.0, MEDIUM.model_name: 8.0}


def test_equal_cost_goes_to_the_higher_score_then_the_simpler_mode() -> None:
    teacher = teacher_scores()
    scores = {
        (SMALL.model_name, "icl-eval"): {k: 1.0 for k in teacher},
        (SMALL.model_name, "base-eval"): dict(teacher),
        (SMALL.model_name, "customized-eval"): dict(teacher),
    }
    decision = decide_promotion(TEACHER, teacher, [SMALL], scores, gate())
    assert decision.promoted == Candidate(SMALL.model_name, "icl-eval")
    del scores[(SMALL.model_name, "icl-eval")]
    decision = decide_promotion(TEACHER, teacher, [SMALL], scores, gate())
    assert decision.promoted == Candidate(SMALL.model_name, "base-eval")


def test_unknown_costs_block_promotion() -> None:
    teacher = teacher_scores()
    no_cost = NIMConfig(model_name="acme/mystery-model")
    scores = {(no_cost.model_name, "base-eval"): dict(teacher)}
    decision = decide_promotion(TEACHER, teacher, [no_cost], scores, gate(cost_basis="size"))
    assert decision.outcome == "no-candidate"
    assert "cost unknown" in decision.reasons[0]
    unknown_teacher = NIMConfig(model_name="acme/teacher")
    scores = {(SMALL.model_name, "base-eval"): dict(teacher)}
    decision = decide_promotion(unknown_teacher, teacher, [SMALL], scores, gate(cost_basis="size"))
    assert decision.outcome == "no-candidate"
    assert any("teacher acme/teacher: cost unknown" in r for r in decision.reasons)


def test_per_sample_rows_are_accepted() -> None:
    teacher = teacher_scores()
    rows = [{"sample_key": k, FUNCTION_NAME_AND_ARGS_ACCURACY: v} for k, v in teacher.items()]
    rows.append({"sample_key": "extra", FUNCTION_NAME_AND_ARGS_ACCURACY: None})
    decision = decide_promotion(TEACHER, rows, [SMALL], {(SMALL.model_name, "base-eval"): rows}, gate())
    assert decision.promoted == Candidate(SMALL.model_name, "base-eval")
    assert decision.rows[0]["n"] == N


def test_decision_is_deterministic_and_renders_markdown() -> None:
    teacher = teacher_scores()
    scores = {(SMALL.model_name, "base-eval"): degrade(teacher, 8)}
    first = decide_promotion(TEACHER, teacher, [SMALL], scores, gate(), seed=7)
    second = decide_promotion(TEACHER, teacher, [SMALL], scores, gate(), seed=7)
    assert first.rows == second.rows and first.reasons == second.reasons
    markdown = first.to_markdown()
    assert markdown.startswith("## Promotion gate: promoted")
    assert "| `meta/llama-3.2-1b-instruct` | base-eval | 300 |" in markdown
    assert "### Reasons" in markdown and "95% interval" in markdown
    summary = first.to_dict()
    assert summary["promoted"] == {"model_name": SMALL.model_name, "eval_mode": "base-eval"}


@pytest.mark.parametrize("modes", [["base-eval"], ["icl-eval", "customized-eval"]])
def test_only_configured_modes_are_assessed(modes: list[str]) -> None:
    decision = decide_promotion(TEACHER, teacher_scores(), [SMALL], {}, gate(eval_modes=modes))
    assert sorted(r["eval_mode"] for r in decision.rows) == sorted(modes)
