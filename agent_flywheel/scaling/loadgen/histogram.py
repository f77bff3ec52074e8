"""An HDR-style latency histogram whose buckets merge exactly across passes, processes and workers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


class LatencyHistogram:
    """Log-linear latency histogram (the HdrHistogram layout) whose merge is exact.

    Values are counted in integer ``unit_s`` steps (1 µs by default). Below ``2**sub_bucket_bits`` units every
    unit has its own bucket; above, each power-of-two range is split into ``2**(sub_bucket_bits-1)`` equal
    buckets, so a bucket is never wider than ``2 / 2**sub_bucket_bits`` of its value (0.78 % with the default
    8 bits) and a percentile read at the bucket's midpoint is within half that. Buckets are stored sparsely,
    so there is no upper limit. Two histograms with the same layout merge by adding counts, which is exact:
    merging the histograms of two workers gives the histogram of all their requests, bit for bit (the sum
    behind the mean is kept in integer nanoseconds, so it too is the same in any order), unlike averaging
    percentiles. A maintained HDR library (``hdrhistogram`` on PyPI) would add a native dependency for
    what this does in forty lines, and it keeps no exact sum for the mean.
    """

    def __init__(self, sub_bucket_bits: int = 8, unit_s: float = 1e-6) -> None:
        if not 2 <= sub_bucket_bits <= 20:
            raise ValueError("sub_bucket_bits must be in 2..20")
        if unit_s <= 0:
            raise ValueError("unit_s must be > 0")
        self.sub_bucket_bits = sub_bucket_bits
        self.unit_s = unit_s
        self._sub = 1 << sub_bucket_bits
        self._half = self._sub >> 1
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total_ns = 0
        self.min_s = math.inf
        self.max_s = -math.inf

    # layout ---------------------------------------------------------------------------------------
    def _index(self, units: int) -> int:
        if units < self._sub:
            return units
        shift = units.bit_length() - self.sub_bucket_bits
        return shift * self._half + (units >> shift)

    def bucket_bounds_s(self, index: int) -> tuple[float, float]:
        """The value range ``[low, high)`` in seconds that bucket ``index`` counts."""
        if index < self._sub:
            lo, hi = index, index + 1
        else:
            shift = index // self._half - 1
            sub = index - shift * self._half
            lo, hi = sub << shift, (sub + 1) << shift
        return lo * self.unit_s, hi * self.unit_s

    # recording ------------------------------------------------------------------------------------
    def record(self, value_s: float, count: int = 1) -> None:
        """Count one latency (seconds); NaN, infinite and negative values are refused."""
        if not math.isfinite(value_s) or value_s < 0:
            raise ValueError(f"latency must be finite and >= 0, got {value_s}")
        if count < 1:
            raise ValueError("count must be >= 1")
        index = self._index(int(value_s / self.unit_s))
        self.counts[index] = self.counts.get(index, 0) + count
        self.count += count
        self.total_ns += round(value_s * 1e9) * count
        self.min_s = min(self.min_s, value_s)
        self.max_s = max(self.max_s, value_s)

    def record_many(self, values_s: Iterable[float]) -> LatencyHistogram:
        """Record every value; returns self for chaining."""
        for v in values_s:
            self.record(v)
        return self

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        """Add another histogram's counts into this one (exact); returns self."""
        if (other.sub_bucket_bits, other.unit_s) != (self.sub_bucket_bits, self.unit_s):
            raise ValueError("cannot merge histograms with different layouts")
        for index, n in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + n
        self.count += other.count
        self.total_ns += other.total_ns
        self.min_s = min(self.min_s, other.min_s)
        self.max_s = max(self.max_s, other.max_s)
        return self

    @classmethod
    def merged(cls, histograms: Iterable[LatencyHistogram], sub_bucket_bits: int = 8) -> LatencyHistogram:
        """A new histogram holding the sum of the given ones."""
        out: LatencyHistogram | None = None
        for h in histograms:
            if out is None:
                out = cls(h.sub_bucket_bits, h.unit_s)
            out.merge(h)
        return out if out is not None else cls(sub_bucket_bits)

    # reading --------------------------------------------------------------------------------------
    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0..100) by nearest rank, read at its bucket's midpoint; None when empty."""
        if not 0 <= q <= 100:
            raise ValueError("q must be in [0, 100]")
        if self.count == 0:
            return None
        if q == 0:
            return self.min_s
        if q == 100:
            return self.max_s
        rank = max(1, math.ceil(q / 100 * self.count))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                lo, hi = self.bucket_bounds_s(index)
                return min(max((lo + hi) / 2, self.min_s), self.max_s)
        return self.max_s

    @property
    def total_s(self) -> float:
        """Sum of the recorded values (kept exactly, in integer nanoseconds)."""
        return self.total_ns / 1e9

    @property
    def mean_s(self) -> float | None:
        """Mean of the recorded values (to the nanosecond: the sum is kept beside the buckets)."""
        return self.total_ns / self.count / 1e9 if self.count else None

    def summary(self) -> dict[str, float | int | None]:
        """count, min, max, mean and p50/p90/p95/p99 in seconds."""
        return {
            "count": self.count,
            "min_s": self.min_s if self.count else None,
            "max_s": self.max_s if self.count else None,
            "mean_s": self.mean_s,
            "p50_s": self.percentile(50),
            "p90_s": self.percentile(90),
            "p95_s": self.percentile(95),
            "p99_s": self.percentile(99),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, to ship a worker's histogram to whoever merges."""
        return {
            "sub_bucket_bits": self.sub_bucket_bits,
            "unit_s": self.unit_s,
            "counts": {str(k): v for k, v in sorted(self.counts.items())},
            "count": self.count,
            "total_ns": self.total_ns,
            "min_s": self.min_s if self.count else None,
            "max_s": self.max_s if self.count else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyHistogram:
        """Inverse of :meth:`to_dict`."""
        h = cls(int(data["sub_bucket_bits"]), float(data["unit_s"]))
        h.counts = {int(k): int(v) for k, v in data["counts"].items()}
        h.count = int(data["count"])
        h.total_ns = int(data["total_ns"])
        h.min_s = math.inf if data.get("min_s") is None else float(data["min_s"])
        h.max_s = -math.inf if data.get("max_s") is None else float(data["max_s"])
        return h

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencyHistogram):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable
