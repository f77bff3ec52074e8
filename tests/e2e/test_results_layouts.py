"""The NeMo simulator's ``download-results`` archive, in every layout it can write, read by the product: the same
rows each time, and a loud error for the archive without samples."""

from __future__ import annotations

import pytest

from agent_flywheel.evaluation.results import ResultsArchiveError, parse_sample_results
from simulators.nemo.evaluator import _zip_results
from simulators.nemo.settings import EvaluationSettings

SAMPLES = {
    "custom-tool-calling": [
        {
            "item": {"request": {"messages": [{"role": "user", "content": f"question {i}"}]}},
            "sample": {"output_text": "", "response": {"choices": [{"message": {"role": "assistant"}}]}},
            "metrics": {
                "tool-calling-accuracy": {
                    "scores": {
                        "function_name_accuracy": {"value": float(i % 2)},
                        "function_name_and_args_accuracy": {"value": None if i == 3 else float(i % 2)},
                    }
                }
            },
        }
        for i in range(5)
    ]
}
AGGREGATE = {"tasks": {"custom-tool-calling": {"metrics": {}}}}
LAYOUTS = EvaluationSettings.model_fields["results_layout"].annotation.__args__  # type: ignore[union-attr]


def test_the_layouts_are_the_ones_documented() -> None:
    assert set(LAYOUTS) == {"root", "nested", "per-task", "no-samples"}


@pytest.mark.parametrize("layout", [layout for layout in LAYOUTS if layout != "no-samples"])
def test_the_product_reads_every_layout_of_the_simulator(layout: str) -> None:
    rows = parse_sample_results(_zip_results("eval-1", SAMPLES, AGGREGATE, layout))
    assert [r["function_name_accuracy"] for r in rows] == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert [r["function_name_and_args_accuracy"] for r in rows] == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert len({r["sample_key"] for r in rows}) == 5


def test_an_archive_without_samples_is_refused() -> None:
    with pytest.raises(ResultsArchiveError, match="aggregate scores only"):
        parse_sample_results(_zip_results("eval-1", SAMPLES, AGGREGATE, "no-samples"))
