"""The rule-based teacher policy: what the teacher model answers to any conversation, deterministically.

It needs no knowledge of the workload, only the conversation and the offered tools:

1. The last message is a tool result: answer in text, summarising it.
2. Otherwise score each offered tool against the user's last message: 2 points per word of the tool's
   name, 0.6 per word elsewhere in its schema (description, parameters, enum values), each weighted by
   how rare the word is among the offered tools (stemmed, stopwords dropped), plus 1 per required
   parameter for which the message holds a specific value (an id such as ``ORD-1234``, an e-mail, a date).
   The best tool (ties: the first offered) is called when it scores at least :data:`CALL_THRESHOLD`, or
   always when ``tool_choice`` is ``required`` or names a function; with ``none`` nothing is called.
3. Arguments: every required parameter, plus optional ones with a specific match, filled from the
   user's messages (the last first): ids, e-mails, ISO dates, numbers, double-quoted strings, an enum value
   named in the text, capitalised names for places, else a short phrase of the message; JSON-schema
   types and enums are respected. When a required id or e-mail is nowhere to be found and the call is not
   forced, the policy asks the user for it instead of calling.
4. No tool: a short plausible reply (greeting, thanks, goodbye, or an answer that restates the topic).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from simulators.nim.conversation import tool_calls_of
from simulators.nim.text import STOPWORDS, content_text, content_words, squash, stem, words

CALL_THRESHOLD = 2.0
NAME_WEIGHT = 2.0
SCHEMA_WEIGHT = 0.6

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*")
_LONG_NUMBER = re.compile(r"(?<![\w.-])\d{4,}(?![\w.-])")
_NUMBER = re.compile(r"(?<![\w.-])-?\d+(?:\.\d+)?(?![\w-])")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december")  # fmt: skip
_TEXT_DATE = re.compile(
    r"\b(" + "|".join(m[:3] for m in _MONTHS) + r")[a-z]*\.?\s+(\d{1,2})(?:st|nd|rd|th)?(?:,?\s+(\d{4}))?\b",
    re.IGNORECASE,
)
_QUOTED = re.compile(r"\"([^\"]{1,200})\"|“([^”]{1,200})”")
_CAPITALISED = re.compile(r"\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*\b")

_EMAIL_WORDS = {"email", "mail"}
_DATE_WORDS = {"date", "day", "when"}
_ID_WORDS = {"id", "ids", "number", "no", "code", "sku", "ref", "reference", "tracking", "order", "ticket", "account"}
_PLACE_WORDS = {"location", "city", "place", "address", "destination", "origin", "country", "region", "town"}
_QUERY_WORDS = {
    "query", "question", "text", "message", "content", "search", "q", "prompt", "description", "reason",
    "issue", "details", "detail", "comment", "feedback", "note", "body", "request", "problem", "summary",
}  # fmt: skip
_NEGATIONS = {"not", "no", "don't", "dont", "never", "without", "disable", "off", "false"}


@dataclass(frozen=True)
class ToolCall:
    """A call as it means something: the function's name and its arguments (an object, not a string)."""

    name: str
    arguments: Any = field(default_factory=dict)

    def to_openai(self, call_id: str) -> dict[str, Any]:
        """The OpenAI wire form, with ``arguments`` as a JSON string."""
        arguments = (
            self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments, ensure_ascii=False)
        )
        return {"id": call_id, "type": "function", "function": {"name": self.name, "arguments": arguments}}


@dataclass(frozen=True)
class Answer:
    """An assistant answer: text, or tool calls (then the content is ``None``)."""

    content: str | None = None
    calls: tuple[ToolCall, ...] = ()

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Answer:
        """An answer as logged (``response.choices[0].message``); arguments may be strings or objects."""
        calls = tuple(
            ToolCall(name, arguments if arguments is not None else {})
            for name, arguments in tool_calls_of(message)
            if name
        )
        content = content_text(message.get("content"))
        return cls(content=(content or None) if calls else content, calls=calls)

    @property
    def text(self) -> str:
        """The text content (empty for a pure tool call)."""
        return self.content or ""


def functions(tools: Any) -> list[dict[str, Any]]:
    """The ``function`` objects of the offered tools, in the order offered (malformed entries skipped)."""
    result = []
    for tool in tools or []:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            result.append(dict(function))
    return result


def _properties(function: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    parameters = function.get("parameters")
    if not isinstance(parameters, Mapping):
        return {}, []
    properties = parameters.get("properties")
    required = parameters.get("required")
    props = (
        {str(k): v if isinstance(v, Mapping) else {} for k, v in properties.items()}
        if isinstance(properties, Mapping)
        else {}
    )
    req = [str(r) for r in required if str(r) in props] if isinstance(required, list) else []
    return props, req


def user_texts(messages: Sequence[Any]) -> list[str]:
    """The user messages' texts, the most recent first."""
    texts = []
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            texts.append(content_text(message.get("content")))
    return texts


def _identifiers(text: str) -> list[re.Match[str]]:
    """Tokens that look like ids: letters and digits together (``ORD-1234``, ``A12``, ``sku_99``)."""
    return [
        m
        for m in _TOKEN.finditer(text)
        if len(m.group(0)) >= 3 and any(c.isdigit() for c in m.group(0)) and any(c.isalpha() for c in m.group(0))
    ]


def _schema_type(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    return kind if isinstance(kind, str) else "string"


def _category(name: str, schema: Mapping[str, Any]) -> str:
    name_words = set(words(name))
    fmt = str(schema.get("format") or "")
    if fmt == "email" or name_words & _EMAIL_WORDS:
        return "email"
    if fmt in ("date", "date-time") or name_words & _DATE_WORDS:
        return "date"
    if name_words & _PLACE_WORDS:
        return "place"
    if name_words & _QUERY_WORDS:
        return "query"
    if name_words & _ID_WORDS or name.lower().endswith("id"):
        return "id"
    return "phrase"


class _Extractor:
    """Values found in the user's messages; each specific value is handed out once."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = [t for t in texts if t]
        self.used: set[str] = set()

    def _first(self, pattern: re.Pattern[str], group: int = 0) -> str | None:
        for text in self.texts:
            for match in pattern.finditer(text):
                value = match.group(group) if group else match.group(0)
                if value is not None and value not in self.used:
                    return value
        return None

    def take(self, value: str | None) -> str | None:
        if value is not None:
            self.used.add(value)
        return value

    def email(self) -> str | None:
        return self._first(_EMAIL)

    def identifier(self) -> str | None:
        for text in self.texts:
            for match in _identifiers(text):
                if match.group(0) not in self.used:
                    return match.group(0)
        return self._first(_LONG_NUMBER)

    def date(self) -> str | None:
        iso = self._first(_ISO_DATE)
        if iso:
            return iso
        for text in self.texts:
            for match in _TEXT_DATE.finditer(text):
                month = next(i for i, m in enumerate(_MONTHS, 1) if m.startswith(match.group(1).lower()[:3]))
                day, year = int(match.group(2)), match.group(3)
                value = f"{year}-{month:02d}-{day:02d}" if year else f"{_MONTHS[month - 1].capitalize()} {day}"
                if value not in self.used and match.group(0) not in self.used:
                    self.used.add(match.group(0))
                    return value
        return None

    def number(self) -> str | None:
        for text in self.texts:
            spans = [m.span() for m in _identifiers(text)] + [m.span() for m in _ISO_DATE.finditer(text)]
            for match in _NUMBER.finditer(text):
                if any(s <= match.start() < e for s, e in spans):
                    continue
                if match.group(0) not in self.used:
                    return match.group(0)
        return None

    def quoted(self) -> str | None:
        for text in self.texts:
            for match in _QUOTED.finditer(text):
                value = match.group(1) or match.group(2)
                if value and value not in self.used:
                    return value
        return None

    def place(self) -> str | None:
        for text in self.texts:
            first_word = text.strip().split(" ", 1)[0] if text.strip() else ""
            for match in _CAPITALISED.finditer(text):
                value = match.group(0)
                if value == first_word or value.lower() in STOPWORDS or value in self.used:
                    continue
                if value.lower() in _MONTHS:
                    continue
                return value
        return None

    def enum(self, options: Sequence[Any]) -> Any:
        for text in self.texts:
            lowered = " " + " ".join(words(text)) + " "
            for option in options:
                if isinstance(option, str) and f" {' '.join(words(option))} " in lowered and words(option):
                    return option
        for text in self.texts:
            message = set(content_words(text))
            for option in options:
                if isinstance(option, str) and set(content_words(option)) & message:
                    return option
        return None

    def phrase(self, limit: int = 5) -> str:
        text = self.texts[0] if self.texts else ""
        candidates = re.findall(r"[A-Za-z0-9][A-Za-z0-9'-]*", text)
        kept = [w for w in candidates if w.lower() not in STOPWORDS and "'" not in w]
        kept = [w for w in kept if w not in self.used] or kept
        return " ".join(kept[:limit]) or squash(text)[:60] or "help"

    def sentence(self) -> str:
        text = squash(self.texts[0]) if self.texts else ""
        return text.rstrip("?!. ")[:160] or "help"

    def negated(self) -> bool:
        return bool(set(words(self.texts[0] if self.texts else "")) & _NEGATIONS)


def _coerce(value: str, kind: str) -> Any:
    if kind == "integer":
        try:
            return int(float(value))
        except ValueError:
            return 1
    if kind == "number":
        try:
            number = float(value)
        except ValueError:
            return 1
        return int(number) if number.is_integer() else number
    return value


def _fill(name: str, schema: Mapping[str, Any], found: _Extractor, optional: bool) -> tuple[bool, Any]:
    """(found a specific value?, value) for one parameter; optional parameters only take specific values."""
    kind = _schema_type(schema)
    options = schema.get("enum")
    if isinstance(options, list) and options:
        value = found.enum(options)
        if value is not None:
            return True, value
        return False, schema.get("default", options[0])
    if kind in ("integer", "number"):
        number = found.take(found.number())
        if number is not None:
            return True, _coerce(number, kind)
        return False, schema.get("default", 1)
    if kind == "boolean":
        return False, not found.negated()
    if kind == "array":
        items = schema.get("items")
        found_item, item = _fill(name, items if isinstance(items, Mapping) else {}, found, optional)
        return found_item, [item]
    if kind == "object":
        props, required = _properties({"parameters": schema})
        return False, {key: _fill(key, props[key], found, False)[1] for key in required}
    category = _category(name, schema)
    specific: str | None = None
    if category == "email":
        specific = found.email()
    elif category == "date":
        specific = found.date()
    elif category == "id":
        specific = found.identifier()
    if specific is None:
        specific = found.quoted()
    if specific is not None:
        return True, found.take(specific)
    if optional:
        return False, None
    if category == "place":
        place = found.place()
        if place is not None:
            return True, found.take(place)
    if category == "query":
        return False, found.sentence()
    if category == "date":
        return False, "today"
    if category in ("email", "id"):
        return False, None
    return False, found.phrase()


def fill_arguments(function: Mapping[str, Any], texts: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """Arguments for a call of ``function`` from the user's texts, and the required ones nowhere to be found.

    Required parameters come first so that, say, the order id is taken before a free-text field.
    """
    props, required = _properties(function)
    found = _Extractor(texts)
    arguments: dict[str, Any] = {}
    missing: list[str] = []
    specific_first = sorted(required, key=lambda n: _category(n, props[n]) not in ("email", "id", "date"))
    for name in specific_first:
        _, value = _fill(name, props[name], found, optional=False)
        if value is None:
            missing.append(name)
            value = found.phrase()
        arguments[name] = value
    for name, schema in props.items():
        if name in arguments:
            continue
        specific, value = _fill(name, schema, found, optional=True)
        if specific and value is not None:
            arguments[name] = value
    return {name: arguments[name] for name in props if name in arguments}, missing


def _tool_words(function: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(name words, other words): the description, parameter names and descriptions, and enum values."""
    name = {stem(w) for w in words(str(function.get("name") or "")) if w not in STOPWORDS}
    texts = [str(function.get("description") or "")]
    props, _ = _properties(function)
    for param, schema in props.items():
        texts.append(param)
        texts.append(str(schema.get("description") or ""))
        options = schema.get("enum")
        if isinstance(options, list):
            texts.extend(str(o) for o in options)
    other = set(content_words(" ".join(texts))) - name
    return name, other


def _specific_bonus(function: Mapping[str, Any], text: str) -> float:
    props, required = _properties(function)
    found = _Extractor([text])
    bonus = 0.0
    for param in required:
        category = _category(param, props[param])
        if (
            (category == "email" and found.email())
            or (category == "id" and _schema_type(props[param]) == "string" and found.identifier())
            or (category == "date" and found.date())
        ):
            bonus += 1.0
    return bonus


def rank_tools(tools: Any, texts: Sequence[str]) -> list[tuple[float, dict[str, Any]]]:
    """Offered tools with their scores, best first (a stable sort keeps the offered order on ties).

    A word of the user's last message scores ``2 * idf`` when it is in the tool's name, with the idf over
    the offered tools' names, and ``0.6 * idf`` when it is elsewhere in the tool's schema, with the idf over
    the whole schemas; ``idf = log(1 + T / df) / log(2)`` (1 for a word every tool has), so the words that
    tell tools apart count most. Plus 1 per required id/e-mail/date parameter whose value the message holds.
    """
    offered = functions(tools)
    if not offered:
        return []
    bags = [_tool_words(f) for f in offered]
    message = set(content_words(texts[0])) if texts else set()
    in_names: dict[str, int] = {}
    anywhere: dict[str, int] = {}
    for name, other in bags:
        for word in name:
            in_names[word] = in_names.get(word, 0) + 1
        for word in name | other:
            anywhere[word] = anywhere.get(word, 0) + 1

    def idf(word: str, frequency: dict[str, int]) -> float:
        return math.log(1 + len(offered) / frequency[word]) / math.log(2)

    scored = []
    for function, (name, other) in zip(offered, bags, strict=True):
        score = sum(NAME_WEIGHT * idf(w, in_names) for w in message & name)
        score += sum(SCHEMA_WEIGHT * idf(w, anywhere) for w in message & other)
        if texts:
            score += _specific_bonus(function, texts[0])
        scored.append((score, function))
    return sorted(scored, key=lambda pair: -pair[0])


def _tool_choice_name(tool_choice: Any) -> str | None:
    if isinstance(tool_choice, Mapping):
        function = tool_choice.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return function["name"]
    return None


def summarise_tool_result(content: Any) -> str:
    """A one-sentence text answer built from a tool's result."""
    text = content_text(content).strip()
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        data = None
    if isinstance(data, list):
        if not data:
            return "I could not find anything matching your request."
        first = summarise_tool_result(json.dumps(data[0])) if isinstance(data[0], dict) else str(data[0])
        return f"I found {len(data)} result{'s' if len(data) != 1 else ''}. {first}"
    if isinstance(data, dict):
        fields = [f"{k.replace('_', ' ')}: {v}" for k, v in data.items() if isinstance(v, str | int | float | bool)]
        if fields:
            return "Here is what I found: " + ", ".join(fields[:4]) + "."
        return "I have the details you asked for."
    if not text:
        return "That is done."
    first_sentence = re.split(r"(?<=[.!?])\s", squash(text), maxsplit=1)[0]
    return f"Here is what I found: {first_sentence[:200]}"


def text_reply(messages: Sequence[Any]) -> str:
    """A short plausible text answer to the conversation's last turn."""
    if messages and isinstance(messages[-1], Mapping) and messages[-1].get("role") == "tool":
        return summarise_tool_result(messages[-1].get("content"))
    texts = user_texts(messages)
    text = texts[0] if texts else ""
    all_words = words(text)
    first = all_words[0] if all_words else ""
    if {"thank", "thanks", "thx"} & set(all_words):
        return "You're welcome! Is there anything else I can help you with?"
    if first in {"bye", "goodbye"} or "goodbye" in all_words:
        return "Goodbye! Have a great day."
    if first in {"hi", "hello", "hey", "greetings"} and len(all_words) <= 4:
        return "Hello! How can I help you today?"
    topic = _Extractor(texts).phrase(limit=6) if text else "your request"
    return f"Thanks for your question about {topic}. I can help with that; let me know if you need more details."


def ask_for(missing: Sequence[str]) -> str:
    """The reply that asks the user for values the policy could not find."""
    names = " and ".join(" ".join(words(m)) for m in missing)
    return f"Could you please share your {names} so I can help you with that?"


def call_for(function: Mapping[str, Any], messages: Sequence[Any]) -> ToolCall:
    """A call of ``function`` with arguments filled from the conversation (missing values get a phrase)."""
    arguments, _ = fill_arguments(function, user_texts(messages))
    return ToolCall(str(function["name"]), arguments)


def respond(messages: Sequence[Any], tools: Any = None, tool_choice: Any = "auto") -> Answer:
    """The teacher policy's answer (see the module docstring); ``messages`` carry no ICL block."""
    offered = functions(tools)
    forced_name = _tool_choice_name(tool_choice)
    forced = tool_choice == "required" or forced_name is not None
    after_tool = bool(messages) and isinstance(messages[-1], Mapping) and messages[-1].get("role") == "tool"
    if not offered or tool_choice == "none" or (after_tool and not forced):
        return Answer(content=text_reply(messages))
    texts = user_texts(messages)
    if forced_name is not None:
        function = next((f for f in offered if f["name"] == forced_name), None)
        if function is None:
            return Answer(content=text_reply(messages))
        return Answer(calls=(call_for(function, messages),))
    ranked = rank_tools(tools, texts)
    best_score, best = ranked[0]
    if best_score < CALL_THRESHOLD and not forced:
        return Answer(content=text_reply(messages))
    arguments, missing = fill_arguments(best, texts)
    unfindable = [m for m in missing if _category(m, _properties(best)[0][m]) in ("email", "id")]
    if unfindable and not forced:
        return Answer(content=ask_for(unfindable))
    return Answer(calls=(ToolCall(str(best["name"]), arguments),))
