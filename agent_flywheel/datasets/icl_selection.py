"""Which in-context examples a record gets: preference orders, and fitting them to a token budget.

Token estimate: no tokenizer is available offline (tiktoken downloads its files), so tokens are
``ceil(characters / 4 × 1.2)``: four characters per token for English and JSON, plus the blueprint's 20 %
safety buffer. It overestimates, which errs on the side of a prompt that fits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from agent_flywheel.records.conversation import ICL_BEGIN, ICL_END, ICL_PREAMBLE


def estimate_tokens(text: str | int) -> int:
    """Token estimate for a text (or a character count): ``ceil(chars / 4 × 1.2)``, see the module doc."""
    chars = text if isinstance(text, int) else len(text)
    return math.ceil(chars * 1.2 / 4) if chars > 0 else 0


def uniform_bins(total: int, bins: int) -> list[int]:
    """``total`` spread over ``bins`` as evenly as possible, the first bins taking the remainder."""
    if bins <= 0:
        return []
    base, extra = divmod(total, bins)
    return [base + (1 if i < extra else 0) for i in range(bins)]


def round_robin(groups: Sequence[Sequence[int]], quotas: Sequence[int]) -> list[int]:
    """A preference order: groups in turn up to their quotas, then the rest of every group in turn.

    The tail lets a record whose quota examples do not fit use other groups' examples instead of getting
    fewer, the fix for the blueprint stopping at the first example that does not fit.
    """
    order: list[int] = []
    taken = [0] * len(groups)
    for limit in (list(quotas), [len(g) for g in groups]):
        progressed = True
        while progressed:
            progressed = False
            for g, members in enumerate(groups):
                if taken[g] < min(limit[g], len(members)):
                    order.append(members[taken[g]])
                    taken[g] += 1
                    progressed = True
    return order


def fit_examples(preferred: Iterable[int], costs: Mapping[int, int], budget: int, max_examples: int) -> list[int]:
    """Examples in preference order that fit the token budget; one that does not fit is skipped, not an end."""
    chosen: list[int] = []
    remaining = budget
    for candidate in preferred:
        if len(chosen) >= max_examples:
            break
        if candidate in chosen:
            continue
        cost = costs[candidate]
        if cost <= remaining:
            chosen.append(candidate)
            remaining -= cost
    return chosen


def relevance_coverage_order(
    hits: Sequence[int], labels: Mapping[int, str], max_examples: int, relevance_ratio: float
) -> list[int]:
    """Semantic preference order: the top ``int(max_examples × relevance_ratio)`` hits, then the best hit
    of each tool not yet covered, then the remaining hits by similarity."""
    relevance = hits[: int(max_examples * relevance_ratio)]
    order = list(relevance)
    covered = {labels[h] for h in relevance}
    for hit in hits:
        if hit not in order and labels[hit] not in covered:
            order.append(hit)
            covered.add(labels[hit])
    order.extend(h for h in hits if h not in order)
    return order


def block_overhead_tokens() -> int:
    """Tokens the ICL block costs beyond its examples: begin, preamble, end and separators."""
    return estimate_tokens(len(ICL_BEGIN) + len(ICL_PREAMBLE) + len(ICL_END) + 8)


def example_cost(text: str) -> int:
    """Tokens one rendered example costs in the ICL block."""
    # +4: the "\n\n" separator and a second digit in "Example 10:".
    return estimate_tokens(len(text) + 4)
