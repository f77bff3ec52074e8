"""Small text helpers shared by the teacher policy, the judge and the token counts.

Token counts follow the usual rule of thumb for English and JSON with Llama tokenizers: about four
characters per token, rounded up, plus a few tokens of chat-template overhead per message.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4

_WORD = re.compile(r"[a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPACES = re.compile(r"\s+")

_STOPWORDS_TEXT = """a about after all also am an and any are as at be been before being but by can could did do does doing
    don done for from get got had has have having he her here hers him his how i if in into is it its just let
    me mine my no nor not now of off on once only or our out over please so some such than that the their them
    then there these they this those to too under up us very was we were what when where which while who whom why
    will with would you your yours hi hey hello thanks thank want need like know tell give show help can't i'm
    i'd i've it's"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def estimate_tokens(text: str) -> int:
    """Tokens in ``text`` at ~4 characters per token (0 for an empty string)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def content_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the text parts of an OpenAI content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return ""


def prompt_tokens(messages: Sequence[Any], tools: Any = None) -> int:
    """Prompt tokens of a chat request: every message's text and tool calls, plus the tool schemas."""
    total = 0
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        total += MESSAGE_OVERHEAD_TOKENS + estimate_tokens(content_text(message.get("content")))
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                arguments = function.get("arguments")
                text = arguments if isinstance(arguments, str) else json.dumps(arguments)
                total += estimate_tokens(str(function.get("name") or "") + text)
    if tools:
        total += estimate_tokens(json.dumps(tools, separators=(",", ":")))
    return total


def completion_tokens(content: str | None, tool_calls: Sequence[Mapping[str, Any]] | None) -> int:
    """Completion tokens of an answer (at least 1: a model always emits an end token)."""
    total = estimate_tokens(content or "")
    for call in tool_calls or []:
        function = call.get("function") or {}
        total += estimate_tokens(str(function.get("name") or "") + str(function.get("arguments") or ""))
    return max(1, total)


def normalise(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces: what "the same text" means for the judge."""
    return " ".join(_WORD.findall(text.lower()))


def stem(word: str) -> str:
    """A crude stemmer, enough to match "orders" with "order" and "returning" with "return"."""
    for suffix, keep in (("ies", "y"), ("ery", "er"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + keep
    return word


def words(text: str) -> list[str]:
    """Lower-case words of ``text``, camelCase and snake_case split."""
    return _WORD.findall(_CAMEL.sub(" ", text).lower())


def content_words(text: str) -> list[str]:
    """Stemmed words of ``text`` without stopwords, in order."""
    return [stem(w) for w in words(text) if w not in STOPWORDS]


def squash(text: str) -> str:
    """Whitespace collapsed to single spaces and trimmed."""
    return _SPACES.sub(" ", text).strip()


def word_f1(reference: str, candidate: str) -> float:
    """Bag-of-words F1 between two texts (1.0 for two empty texts)."""
    ref, cand = normalise(reference).split(), normalise(candidate).split()
    if not ref and not cand:
        return 1.0
    if not ref or not cand:
        return 0.0
    counts: dict[str, int] = {}
    for w in ref:
        counts[w] = counts.get(w, 0) + 1
    common = 0
    for w in cand:
        if counts.get(w, 0) > 0:
            counts[w] -= 1
            common += 1
    if common == 0:
        return 0.0
    precision, recall = common / len(cand), common / len(ref)
    return 2 * precision * recall / (precision + recall)
