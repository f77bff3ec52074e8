"""Semantic ICL selection: the train examples most similar to each eval record, by embedding."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from agent_flywheel.config import ICLConfig
from agent_flywheel.datasets.icl_selection import relevance_coverage_order
from agent_flywheel.records.keys import request_messages

EMBED_BATCH_SIZE = 64
# Semantic selection embeds at most this many train records (a seeded, stratified sample), so a huge
# train split costs neither an hour of embedding calls nor gigabytes of vectors.
MAX_SEMANTIC_POOL = 20_000
SEMANTIC_HITS_PER_EXAMPLE = 5

Embedder = Callable[[list[str]], list[list[float]]]


def last_user_text(messages: Sequence[Any]) -> str:
    """The last user message's text (text parts joined for multimodal content): what semantic ICL embeds."""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                parts = [p.get("text") for p in content if isinstance(p, Mapping)]
                return " ".join(p for p in parts if isinstance(p, str))
    return ""


def embed_all(texts: Sequence[str], embed: Embedder) -> np.ndarray:
    """Unit-normalised float32 embeddings, requested in batches."""
    rows: list[np.ndarray] = []
    for start in range(0, len(texts), EMBED_BATCH_SIZE):
        batch = list(texts[start : start + EMBED_BATCH_SIZE])
        vectors = np.asarray(embed(batch), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(batch):
            raise ValueError(f"embed returned shape {vectors.shape} for {len(batch)} texts")
        rows.append(vectors)
    matrix = np.concatenate(rows) if rows else np.zeros((0, 1), dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def semantic_hits(
    eval_records: Mapping[int, Mapping[str, Any]],
    user_texts: Mapping[int, str],
    label_of: Mapping[int, str],
    tool_calling: bool,
    icl_cfg: ICLConfig,
    embed: Embedder,
) -> dict[int, list[int]]:
    """Per eval record, the train examples in semantic preference order (cosine similarity, then
    relevance/coverage for tool-calling labels)."""
    pool = sorted(user_texts)
    pool_matrix = embed_all([user_texts[p] for p in pool], embed)
    eval_positions = list(eval_records)
    queries = embed_all([last_user_text(request_messages(eval_records[p]) or []) for p in eval_positions], embed)
    k = min(len(pool), icl_cfg.max_examples * (SEMANTIC_HITS_PER_EXAMPLE if tool_calling else 1))
    result: dict[int, list[int]] = {}
    if not pool:
        return {p: [] for p in eval_positions}
    for row, position in enumerate(eval_positions):
        scores = pool_matrix @ queries[row]  # cosine: both sides are unit vectors
        top = np.argpartition(-scores, k - 1)[:k] if k < len(pool) else np.arange(len(pool))
        top = top[np.lexsort((top, -scores[top]))]
        hits = [pool[int(i)] for i in top]
        if tool_calling:
            hits = relevance_coverage_order(
                hits, label_of, icl_cfg.max_examples, icl_cfg.similarity_config.relevance_ratio
            )
        result[position] = hits
    return result
