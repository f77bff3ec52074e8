"""Deterministic text embeddings: a hashed bag of word unigrams, bigrams and character trigrams.

Each feature is hashed (BLAKE2b) to a dimension and a sign; unigrams weigh 1, bigrams 0.5 and the
character trigrams of each word 0.25 (so "orders" and "order" stay close). The vector is L2-normalised,
so the cosine of two texts grows with the words they share. ``input_type`` (``query``/``passage``) is
accepted and does not change the vector: the simulated model is symmetric. An empty text embeds to a
fixed unit vector.
"""

from __future__ import annotations

import base64
import hashlib
import itertools

import numpy as np

from simulators.nim.text import words

_WEIGHTS = {"w": 1.0, "b": 0.5, "c": 0.25}


def _features(text: str) -> list[tuple[str, float]]:
    tokens = words(text)
    features = [(f"w:{t}", _WEIGHTS["w"]) for t in tokens]
    features += [(f"b:{a} {b}", _WEIGHTS["b"]) for a, b in itertools.pairwise(tokens)]
    for token in tokens:
        padded = f"#{token}#"
        features += [(f"c:{padded[i : i + 3]}", _WEIGHTS["c"]) for i in range(len(padded) - 2)]
    return features


def embed(text: str, dimensions: int) -> np.ndarray:
    """The unit vector of ``text`` in ``dimensions`` dimensions (float32)."""
    vector = np.zeros(dimensions, dtype=np.float64)
    features = _features(text) or [("empty", 1.0)]
    for feature, weight in features:
        digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "big")
        sign = 1.0 if value & 1 else -1.0
        vector[(value >> 1) % dimensions] += sign * weight
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        vector[0] = 1.0
        norm = 1.0
    return (vector / norm).astype(np.float32)


def encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    """``float``: a list of floats; ``base64``: little-endian float32 bytes, as the OpenAI client expects."""
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two unit vectors."""
    return float(np.dot(a, b))
