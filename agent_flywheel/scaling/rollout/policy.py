"""The burn-rate rules of the Google SRE workbook and the knobs of a stage check."""

from __future__ import annotations

from dataclasses import dataclass

HOUR_S = 3600.0


@dataclass(frozen=True)
class BurnRule:
    """A workbook alert: fire when both windows burn faster than ``f × period / long_window``."""

    name: str
    budget_fraction: float
    long_window_s: float
    short_window_s: float

    def threshold(self, period_s: float) -> float:
        """Burn-rate threshold for an SLO period (14.4 and 6 for the page rules over 30 days)."""
        return self.budget_fraction * period_s / self.long_window_s


SRE_PAGE_RULES: tuple[BurnRule, ...] = (
    BurnRule("fast burn (2% of budget in 1 h)", 0.02, HOUR_S, 5 * 60.0),
    BurnRule("slow burn (5% of budget in 6 h)", 0.05, 6 * HOUR_S, 30 * 60.0),
)


@dataclass(frozen=True)
class RolloutPolicy:
    """Knobs of the stage check (not in the YAML config: defaults that suit most agents)."""

    min_requests: int = 50  # canary requests a stage needs before it can be promoted
    min_window_requests: int = 20  # canary requests a long window needs before a burn rule may fire
    min_short_window_requests: int = 5
    alpha: float = 0.05  # one-sided level of every bound; the three canary-vs-baseline tests share it (Bonferroni)
    latency_tolerance: float = 0.10  # canary p95 may be this much above baseline before it counts as worse
    quality_tolerance: float = 0.02  # allowed drop in mean quality
    min_quality_samples: int = 20
    rules: tuple[BurnRule, ...] = SRE_PAGE_RULES
    reference_window_s: float = 6 * HOUR_S  # the longest workbook window, scaled to the stage length
