"""The seeded, stratified split of records into eval, validation and train."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np


def allocate_stratified(counts: Sequence[int], k: int) -> list[int]:
    """How many of each class go to a ``k``-record split: largest-remainder allocation with guarantees.

    - proportional: ``floor(k × c / n)`` each, the remaining slots by largest fractional part (ties: bigger
      class, then class order);
    - when ``k`` is at least the number of classes with two or more records, each such class gets one;
    - a class with two or more records keeps one outside the split whenever the totals allow it;
    - singleton classes are placed like any other (no crash, unlike sklearn in blueprint bug 4).
    """
    n = sum(counts)
    k = max(0, min(k, n))
    if k == n:
        return list(counts)
    if k == 0:
        return [0] * len(counts)
    quotas = [k * c / n for c in counts]
    alloc = [math.floor(q) for q in quotas]
    eligible = [c >= 2 for c in counts]
    minimum = [0] * len(counts)
    if k >= sum(eligible):
        minimum = [1 if e else 0 for e in eligible]
    soft_cap = [c - 1 if c >= 2 else c for c in counts]
    alloc = [max(minimum[j], min(alloc[j], soft_cap[j])) for j in range(len(counts))]
    order = sorted(range(len(counts)), key=lambda j: (-(quotas[j] - alloc[j]), -counts[j], j))
    diff = k - sum(alloc)
    for caps in (soft_cap, list(counts)):
        while diff > 0:
            progressed = False
            for j in sorted(order, key=lambda j: (-(quotas[j] - alloc[j]), -counts[j], j)):
                if diff == 0:
                    break
                if alloc[j] < caps[j]:
                    alloc[j] += 1
                    diff -= 1
                    progressed = True
            if not progressed:
                break
    while diff < 0:
        over = [j for j in range(len(counts)) if alloc[j] > minimum[j]]
        j = max(over, key=lambda j: (alloc[j] - quotas[j], alloc[j], -j))
        alloc[j] -= 1
        diff += 1
    return alloc


def stratified_split(
    labels: Sequence[Hashable] | np.ndarray, test_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``0..n-1`` into ``(rest, test)`` with ``test_size`` test records, stratified by label.

    Per-class counts come from :func:`allocate_stratified`; members of each class are shuffled with a
    generator seeded by ``seed`` (classes in sorted order), so the split is a pure function of the labels,
    ``test_size`` and ``seed``. Both index arrays are sorted.
    """
    values = np.asarray(labels)
    n = int(values.shape[0])
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    classes, codes = np.unique(values, return_inverse=True)
    codes = codes.reshape(-1)
    counts = np.bincount(codes, minlength=len(classes))
    alloc = allocate_stratified([int(c) for c in counts], test_size)
    rng = np.random.default_rng(seed % (1 << 64))
    by_class = np.argsort(codes, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)))
    chosen = []
    for j in range(len(classes)):
        members = by_class[starts[j] : starts[j + 1]]
        if alloc[j]:
            chosen.append(rng.permutation(members)[: alloc[j]])
    test = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask).astype(np.int64), test.astype(np.int64)


def split_sizes(n: int, eval_size: int, val_ratio: float) -> tuple[int, int, int]:
    """``(eval, val, train)`` sizes: eval = ``min(eval_size, n)``; val = ``ceil(val_ratio × rest)``, leaving
    at least one train record when the rest has two or more."""
    n_eval = min(eval_size, n)
    rest = n - n_eval
    n_val = math.ceil(val_ratio * rest) if val_ratio > 0 else 0
    if rest >= 2:
        n_val = min(n_val, rest - 1)
    n_val = min(n_val, rest)
    return n_eval, n_val, rest - n_val


def stage_rng(seed: int, stage: int) -> np.random.Generator:
    """An independent generator per stage, so changing one stage never shifts another's draws."""
    return np.random.default_rng([seed % (1 << 64), stage])


def stage_seed(seed: int, stage: int) -> int:
    """A derived integer seed per stage (stable across numpy versions: from SeedSequence state)."""
    return int(np.random.SeedSequence([seed % (1 << 64), stage]).generate_state(1, dtype=np.uint64)[0])


def records_for_training(min_train: int, val_ratio: float) -> int:
    """How many records training and validation together need so that :func:`split_sizes` leaves
    ``min_train`` of them for training (validation takes ``ceil(val_ratio × rest)``)."""
    rest = min_train
    while True:
        n_train = split_sizes(rest, 0, val_ratio)[2]
        if n_train >= min_train:
            return rest
        rest += max(1, min_train - n_train)


@dataclass(frozen=True)
class SplitPlan:
    """How many records each split gets: ``n_eval + n_val + n_train == n``; ``warnings`` say what gave way."""

    n_eval: int
    n_val: int
    n_train: int
    warnings: tuple[str, ...] = ()


class ShortOfRecords(ValueError):
    """Too few records for a run that can both train and decide; ``needed`` is the least that would do."""

    def __init__(self, message: str, needed: int) -> None:
        super().__init__(message)
        self.needed = needed


def plan_split(n: int, eval_size: int, val_ratio: float, min_train: int, min_eval: int, gate: str = "") -> SplitPlan:
    """The split sizes for ``n`` records: training first, then evaluation (see ``DataSplitConfig.min_train_records``).

    ``min_eval`` is the smallest evaluation set on which the gate decides anything
    (:func:`~agent_flywheel.evaluation.gate.minimum_eval_records`); ``gate`` describes where it comes from,
    for messages. With plenty of records this is exactly :func:`split_sizes`; with fewer, the evaluation set
    gives way down to ``min_eval``; below that, :class:`ShortOfRecords` says how many records are needed.
    """
    floor = min(eval_size, min_eval)
    rest_needed = records_for_training(min_train, val_ratio)
    if n < floor + rest_needed:
        needed = floor + rest_needed
        raise ShortOfRecords(
            f"{n} usable records, but a run needs at least {needed}: {floor} for the evaluation set"
            f"{f' (the minimum for a meaningful gate: {gate})' if gate and floor == min_eval else ''} and "
            f"{rest_needed} for training and validation (data_split_config.min_train_records={min_train}, "
            f"val_ratio={val_ratio:g}). Nothing was created. Collect more traffic, or lower "
            "data_split_config.min_train_records in the flywheel config",
            needed,
        )
    warnings: list[str] = []
    n_eval = min(eval_size, n - rest_needed)
    if n_eval < eval_size:
        warnings.append(
            f"eval_size {eval_size} reduced to {n_eval} so that {rest_needed} records remain for training and "
            f"validation (data_split_config.min_train_records={min_train}); the minimum for a meaningful gate is "
            f"{min_eval}{f' ({gate})' if gate else ''}"
        )
    elif eval_size < min_eval:
        warnings.append(
            f"eval_size {eval_size} is below the minimum for a meaningful gate, {min_eval}"
            f"{f' ({gate})' if gate else ''}: a candidate wrong on one sample more than the teacher cannot pass"
        )
    _, n_val, n_train = split_sizes(n - n_eval, 0, val_ratio)
    return SplitPlan(n_eval, n_val, n_train, tuple(warnings))
