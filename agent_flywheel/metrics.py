"""Tool-calling metrics, judge-reply parsing, bootstrap intervals and NeMo Evaluator result parsing.

The same code scores samples in the Evaluator simulator and reads the real Evaluator's results, so a
number means the same thing whichever produced it. Per-sample values are 1.0 or 0.0; aggregates are
means, and every comparison between models goes through a bootstrap interval, never a bare mean.

Differences from the blueprint, on purpose:
- a reference with no tool call matched by a prediction with none is a *match* (we evaluate "no call"
  decisions; the blueprint drops those records and forces ``tool_choice: required``);
- judge patterns capture whole numbers, so a similarity reply of ``10`` is 10, not 1 (blueprint bug 1);
- similarity (1–10) is scaled to 0–1 so every metric lives on the same scale.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent_flywheel.conversation import conversation_hash, parse_arguments

FUNCTION_NAME_ACCURACY = "function_name_accuracy"
FUNCTION_NAME_AND_ARGS_ACCURACY = "function_name_and_args_accuracy"
TOOL_CALLING_CORRECTNESS = "tool_calling_correctness"
SIMILARITY = "similarity"
TOOL_CALLING_METRICS: tuple[str, ...] = (
    FUNCTION_NAME_ACCURACY,
    FUNCTION_NAME_AND_ARGS_ACCURACY,
    TOOL_CALLING_CORRECTNESS,
)
ALL_METRICS: tuple[str, ...] = (*TOOL_CALLING_METRICS, SIMILARITY)

# Judge reply patterns we send to the Evaluator; each captures a whole number in group 1.
JUDGE_RATING_PATTERN = r"RATING:\s*(\d+)"
JUDGE_SIMILARITY_PATTERN = r"(\d+)"
SIMILARITY_MIN = 1.0
SIMILARITY_MAX = 10.0

# Evaluator (metric, score) -> our metric name.
EVALUATOR_SCORE_NAMES: dict[tuple[str, str], str] = {
    ("tool-calling-accuracy", "function_name_accuracy"): FUNCTION_NAME_ACCURACY,
    ("tool-calling-accuracy", "function_name_and_args_accuracy"): FUNCTION_NAME_AND_ARGS_ACCURACY,
    ("correctness", "rating"): TOOL_CALLING_CORRECTNESS,
    ("llm-judge", "similarity"): SIMILARITY,
}


# --------------------------------------------------------------------------------------------------
# Per-sample tool-calling metrics
# --------------------------------------------------------------------------------------------------


def _normalise_value(value: Any) -> Any:
    """JSON value in a canonical form: integral floats become ints, so ``1`` and ``1.0`` compare equal."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _normalise_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise_value(v) for v in value]
    return value


def _canonical_arguments(arguments: Any) -> str:
    """Arguments as a canonical JSON string; absent or empty arguments are the empty object."""
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        arguments = {}
    parsed = parse_arguments(arguments)
    return json.dumps(_normalise_value(parsed), sort_keys=True, ensure_ascii=False, default=str)


def _calls(tool_calls: Any) -> list[tuple[str, str]]:
    """``(name, canonical args)`` per call from OpenAI-shaped calls, flat ``{name, arguments}`` or JSON text.

    ``None``, ``"null"``, ``""`` and ``[]`` all mean "no call". Anything that is not a call counts as a call
    with an invalid name, so a malformed prediction never matches a well-formed reference.
    """
    if isinstance(tool_calls, str):
        text = tool_calls.strip()
        if not text or text in ("null", "None"):
            return []
        try:
            tool_calls = json.loads(text)
        except json.JSONDecodeError:
            return [("<invalid>", text)]
    if tool_calls is None:
        return []
    if isinstance(tool_calls, Mapping):
        tool_calls = [tool_calls]
    if not isinstance(tool_calls, list):
        return [("<invalid>", repr(tool_calls))]
    result = []
    for call in tool_calls:
        if not isinstance(call, Mapping):
            result.append(("<invalid>", repr(call)))
            continue
        nested = call.get("function")
        function: Mapping[str, Any] = nested if isinstance(nested, Mapping) else call
        name = function.get("name")
        result.append((name if isinstance(name, str) else "<invalid>", _canonical_arguments(function.get("arguments"))))
    return result


def function_name_match(predicted_tool_calls: Any, reference_tool_calls: Any) -> float:
    """1.0 when the predicted calls name the same functions as the reference (as a multiset), else 0.0.

    Two empty sides match: choosing not to call a tool when the reference did not is a correct decision.
    """
    predicted = Counter(name for name, _ in _calls(predicted_tool_calls))
    reference = Counter(name for name, _ in _calls(reference_tool_calls))
    return 1.0 if predicted == reference else 0.0


def function_name_and_args_match(predicted_tool_calls: Any, reference_tool_calls: Any) -> float:
    """1.0 when names and parsed arguments match as a multiset of calls (order-insensitive), else 0.0.

    Arguments given as JSON strings or objects compare after parsing; key order and ``1`` vs ``1.0``
    do not matter, but types otherwise do (``"5"`` is not ``5``), as in an exact-match metric.
    """
    return 1.0 if Counter(_calls(predicted_tool_calls)) == Counter(_calls(reference_tool_calls)) else 0.0


# --------------------------------------------------------------------------------------------------
# Judge replies
# --------------------------------------------------------------------------------------------------


def parse_judge_score(text: str, pattern: str, cast: str = "int") -> float | None:
    """The judge's score: the pattern's first capture group (or whole match), cast; None when unparseable.

    ``cast="int"`` accepts integral numbers only (``"8"``, ``"8.0"``; ``"8.5"`` is None). None, not 0, so a judge that rambles is counted as a parse failure rather than as a bad answer.
    """
    if not isinstance(text, str):
        return None
    match = re.search(pattern, text)
    if match is None:
        return None
    raw = match.group(1) if match.re.groups else match.group(0)
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or (cast == "int" and not value.is_integer()):
        return None
    return value


def scale_similarity(value: float) -> float:
    """A 1–10 similarity rating on 0–1: ``(v - 1) / 9``, clamped; linear, so it commutes with the mean."""
    scaled = (value - SIMILARITY_MIN) / (SIMILARITY_MAX - SIMILARITY_MIN)
    return min(1.0, max(0.0, scaled))


# --------------------------------------------------------------------------------------------------
# Bootstrap intervals
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A mean with a percentile-bootstrap interval; ``n`` is the number of samples behind it."""

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class PairedDifference:
    """Candidate minus reference on paired samples, with the bootstrap interval of the mean difference."""

    difference: Interval
    candidate_mean: float
    reference_mean: float
    unpaired_candidate: int
    unpaired_reference: int

    @property
    def n(self) -> int:
        """Number of paired samples."""
        return self.difference.n


_MAX_DRAWS_PER_CHUNK = 4_000_000


def bootstrap_mean_interval(
    values: Iterable[float], confidence: float = 0.95, n_resamples: int = 2000, seed: int | None = 0
) -> Interval:
    """Mean and percentile-bootstrap interval, resampled in vectorised chunks with a seeded generator.

    No samples: NaNs with ``n = 0`` (the caller decides what "not evaluated" means). One sample: a
    zero-width interval at that value.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    data = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    n = int(data.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(data.mean())
    if n == 1 or float(data.min()) == float(data.max()):
        return Interval(mean, mean, mean, n)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples, dtype=float)
    rows = max(1, _MAX_DRAWS_PER_CHUNK // n)
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = data[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(mean, float(min(low, mean)), float(max(high, mean)), n)


def paired_bootstrap_difference(
    candidate: Mapping[str, float] | Sequence[float],
    reference: Mapping[str, float] | Sequence[float],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int | None = 0,
) -> PairedDifference:
    """Bootstrap interval of mean(candidate − reference) over samples scored by both.

    Mappings pair by sample key (the conversation hash), sequences by index (they must have equal
    length). Pairing removes the between-sample variance that dominates when both models find the same
    samples hard, so the interval is much narrower than one from two independent means. Samples scored
    by only one side are counted, not used.
    """
    if isinstance(candidate, Mapping) != isinstance(reference, Mapping):
        raise TypeError("candidate and reference must both be mappings (by sample key) or both sequences")
    if isinstance(candidate, Mapping) and isinstance(reference, Mapping):
        keys = [k for k in reference if k in candidate]
        cand = np.fromiter((candidate[k] for k in keys), dtype=float, count=len(keys))
        ref = np.fromiter((reference[k] for k in keys), dtype=float, count=len(keys))
        unpaired_c, unpaired_r = len(candidate) - len(keys), len(reference) - len(keys)
    else:
        if len(candidate) != len(reference):
            raise ValueError(f"paired sequences differ in length: {len(candidate)} vs {len(reference)}")
        cand = np.asarray(candidate, dtype=float)
        ref = np.asarray(reference, dtype=float)
        unpaired_c = unpaired_r = 0
    keep = np.isfinite(cand) & np.isfinite(ref)
    dropped = int((~keep).sum())
    cand, ref = cand[keep], ref[keep]
    diff = bootstrap_mean_interval(cand - ref, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return PairedDifference(
        difference=diff,
        candidate_mean=float(cand.mean()) if cand.size else math.nan,
        reference_mean=float(ref.mean()) if ref.size else math.nan,
        unpaired_candidate=unpaired_c + dropped,
        unpaired_reference=unpaired_r + dropped,
    )


# --------------------------------------------------------------------------------------------------
# NeMo Evaluator results
# --------------------------------------------------------------------------------------------------


def _our_name(metric: str, score: str) -> str:
    return EVALUATOR_SCORE_NAMES.get((metric, score), f"{metric}.{score}")


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _map_scores(metrics: Any) -> dict[str, float | None]:
    """``{metric: {scores: {score: {value}}}}`` → ``{our_name: value}``, similarity scaled to 0–1."""
    result: dict[str, float | None] = {}
    if not isinstance(metrics, Mapping):
        return result
    for metric, body in metrics.items():
        scores = body.get("scores") if isinstance(body, Mapping) else None
        if not isinstance(scores, Mapping):
            continue
        for score, payload in scores.items():
            raw = payload.get("value") if isinstance(payload, Mapping) else payload
            value = _finite(raw)
            name = _our_name(str(metric), str(score))
            if name == SIMILARITY and value is not None:
                value = scale_similarity(value)
            result[name] = value
    return result


def parse_aggregate_results(payload: Mapping[str, Any]) -> dict[str, float]:
    """Evaluator ``GET /v1/evaluation/jobs/{id}/results`` → ``{our_metric_name: value}``.

    Known scores get our names (``correctness.rating`` → ``tool_calling_correctness``, similarity scaled
    to 0–1); others keep the Evaluator's ``<metric>.<score>`` so nothing disappears. Missing or
    non-numeric values are left out.
    """
    result: dict[str, float] = {}
    tasks = payload.get("tasks") if isinstance(payload, Mapping) else None
    if not isinstance(tasks, Mapping):
        return result
    for task in tasks.values():
        metrics = task.get("metrics") if isinstance(task, Mapping) else None
        for name, value in _map_scores(metrics).items():
            if value is not None:
                result[name] = value
    return result


def sample_key(item: Any, index: int) -> str:
    """The key that pairs a sample across evaluations: the conversation hash of the row, else ``#index``.

    ICL rows hash like their base rows because ``conversation_hash`` ignores the injected examples.
    """
    if isinstance(item, Mapping):
        request = item.get("request")
        if isinstance(request, Mapping) and isinstance(request.get("messages"), list):
            return conversation_hash(request["messages"], request.get("tools"))
        if isinstance(item.get("messages"), list):
            return conversation_hash(item["messages"], item.get("tools"))
    return f"#{index}"


def read_results_archive(source: bytes | str | Path) -> dict[str, Any]:
    """The ``results.json`` inside an Evaluator ``download-results`` ZIP (bytes or a path), anywhere in it."""
    data = Path(source).read_bytes() if isinstance(source, str | Path) else source
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = sorted((n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "results.json"), key=len)
        if not names:
            raise ValueError(f"no results.json in the archive (files: {archive.namelist()[:10]})")
        loaded = json.loads(archive.read(names[0]))
    if not isinstance(loaded, dict):
        raise ValueError("results.json is not a JSON object of tasks")
    return loaded


def parse_sample_results(results: Mapping[str, Any] | bytes | str | Path) -> list[dict[str, Any]]:
    """Per-sample rows from Evaluator per-sample results (``results.json`` or the ZIP holding it).

    Each row: ``{"sample_key", "index", "task", <our metric>: float | None, ...}``. A value is None when
    the Evaluator could not score the sample (e.g. the judge reply did not parse). Duplicate keys get a
    ``#n`` suffix so pairing stays one-to-one.
    """
    data = results if isinstance(results, Mapping) else read_results_archive(results)
    rows: list[dict[str, Any]] = []
    seen: Counter[str] = Counter()
    for task, samples in data.items():
        if not isinstance(samples, list):
            continue
        for index, entry in enumerate(samples):
            if not isinstance(entry, Mapping):
                continue
            key = sample_key(entry.get("item"), index)
            seen[key] += 1
            if seen[key] > 1:
                key = f"{key}#{seen[key]}"
            row: dict[str, Any] = {"sample_key": key, "index": index, "task": str(task)}
            row.update(_map_scores(entry.get("metrics")))
            rows.append(row)
    return rows


def scores_by_sample(rows: Iterable[Mapping[str, Any]], metric: str) -> dict[str, float]:
    """``{sample_key: value}`` for one metric, leaving out samples where it is missing: the gate's input."""
    result: dict[str, float] = {}
    for row in rows:
        value = _finite(row.get(metric))
        if value is not None:
            result[str(row["sample_key"])] = value
    return result
