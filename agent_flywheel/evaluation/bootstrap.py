"""Bootstrap intervals: a mean with its interval, and the paired difference between two models."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


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
