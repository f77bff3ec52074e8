"""Synthetic customers for the demo agent: varied, reproducible messages and a bounded-concurrency sender.

The flywheel needs traffic that looks like a real support queue (order questions with real and wrong ids,
returns with reasons, product questions, chit-chat, typos, many phrasings) to build datasets from, and the
profiler needs a default dataset of example inputs. Both come from :func:`synthetic_messages`, which is a
pure function of ``(n, seed)``: the same seed gives the same messages, so a demo or a test is reproducible.
:func:`run_traffic` sends them to the agent's ``POST /v1/chat`` and reports what happened.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from simulators.agent.tools import CATALOG, FIRST_ORDER, LAST_ORDER

# --------------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------------

_ORDER_STATUS = (
    "Where is my order {order}?",
    "hi, can you check the status of order {order}",
    "My package {order} still hasn't arrived. What's going on?",
    "Has {order} shipped yet?",
    "Could you give me the tracking number for {order}, please?",
    "when will order {order} be delivered",
    "I ordered something last week ({order}) and I'd like to know where it is.",
    "status of {order}??",
    "Hello! Any update on my order {order}? Thanks",
)
_RETURN = (
    "I want to return order {order}, the item {reason}.",
    "How do I send back {order}? It {reason}.",
    "Please start a return for {order} because it {reason}",
    "return {order} - {reason}",
    "Hi, the {product} from order {order} {reason}. Can I get a refund?",
    "I'd like to return the {product} I got in {order}; it {reason}.",
)
_REASONS = (
    "arrived damaged",
    "was broken when I opened the box",
    "is not what I ordered",
    "was the wrong size",
    "doesn't match the description on the website",
    "is no longer needed",
    "came two weeks late",
    "stopped working after a day",
)
_REFUND = (
    "Did you process the refund for {order}?",
    "I returned {order} a while ago, where is my money?",
    "refund status for order {order} please",
    "When will I get my refund for {order}?",
)
_SEARCH = (
    "Do you sell {query}?",
    "I'm looking for {query}, what do you have?",
    "any {query} in stock?",
    "Can you recommend {query} under $150?",
    "show me {query}",
    "What {category} products do you have?",
)
_QUERIES = (
    "wireless headphones",
    "smart speakers",
    "usb-c chargers",
    "action cameras",
    "standing desks",
    "desk lamps",
    "cast iron skillets",
    "pour-over kettles",
    "kitchen knives",
    "two-person tents",
    "hiking backpacks",
    "wool hoodies",
    "running shoes",
)
_DETAILS = (
    "What's the warranty on the {product}?",
    "Is the {product} in stock?",
    "How much does the {product} cost?",
    "Tell me more about {product_id}.",
    "what's the rating of the {product}",
    "Does the {product} come with a warranty? How long?",
)
_ESCALATE = (
    "I want to talk to a real person.",
    "This is ridiculous, get me a manager. Order {order} has been wrong three times.",
    "Can I speak to a human agent please",
    "I've been charged twice for {order}, I need someone to fix this now!",
    "Please escalate: my account was locked and I can't log in.",
)
_CHIT_CHAT = (
    "hi",
    "Hello there!",
    "thanks, that's all",
    "Thank you so much for your help!",
    "What are your opening hours?",
    "Are you a bot?",
    "good morning :)",
    "How's your day going?",
    "What's your return policy?",
    "Do you ship internationally?",
    "bye",
)
USER_POPULATION = 500
_INTENTS: tuple[tuple[str, float], ...] = (
    ("order_status", 0.28),
    ("return", 0.18),
    ("refund", 0.10),
    ("product_search", 0.14),
    ("product_details", 0.12),
    ("escalate", 0.06),
    ("chit_chat", 0.12),
)


def _order_id(rng: random.Random) -> str:
    """Mostly real orders in varied spellings; some that do not exist, as customers mistype them."""
    roll = rng.random()
    number = rng.randint(FIRST_ORDER, LAST_ORDER) if roll < 0.9 else rng.randint(20000, 99999)
    style = rng.random()
    if style < 0.6:
        return f"ORD-{number}"
    if style < 0.75:
        return f"#{number}"
    if style < 0.9:
        return f"ord {number}"
    return str(number)


def _typo(rng: random.Random, text: str) -> str:
    """One realistic slip: two letters swapped, one dropped or one doubled (never inside an id)."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if w.isalpha() and len(w) > 3]
    if not candidates:
        return text
    i = rng.choice(candidates)
    word = words[i]
    j = rng.randrange(1, len(word) - 1)
    kind = rng.random()
    if kind < 0.4:
        word = word[: j - 1] + word[j] + word[j - 1] + word[j + 1 :]
    elif kind < 0.7:
        word = word[:j] + word[j + 1 :]
    else:
        word = word[:j] + word[j] + word[j:]
    words[i] = word
    return " ".join(words)


def _vary_case(rng: random.Random, text: str) -> str:
    roll = rng.random()
    if roll < 0.1:
        return text.lower()
    if roll < 0.13:
        return text.upper()
    return text


def _message(rng: random.Random, intent: str) -> str:
    product = rng.choice(CATALOG)
    slots = {
        "order": _order_id(rng),
        "reason": rng.choice(_REASONS),
        "product": product.name if rng.random() < 0.7 else product.name.split(" ", 1)[-1].lower(),
        "product_id": product.product_id,
        "query": rng.choice(_QUERIES),
        "category": product.category,
    }
    templates = {
        "order_status": _ORDER_STATUS,
        "return": _RETURN,
        "refund": _REFUND,
        "product_search": _SEARCH,
        "product_details": _DETAILS,
        "escalate": _ESCALATE,
        "chit_chat": _CHIT_CHAT,
    }[intent]
    return rng.choice(templates).format(**slots)


def synthetic_messages(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` chat request bodies (``message``, ``user_id``, ``session_id``), the same for the same seed.

    Users are drawn from a fixed population of ``USER_POPULATION`` ids, so canary routing by user sees many
    users and some come back. Every message has its own session id (single-turn conversations). The first
    ``k`` messages do not depend on ``n``, so a small dataset is a prefix of a larger one.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = random.Random(seed)
    names = [name for name, _ in _INTENTS]
    weights = [weight for _, weight in _INTENTS]
    bodies = []
    for i in range(n):
        intent = rng.choices(names, weights)[0]
        text = _message(rng, intent)
        if rng.random() < 0.15:
            text = _typo(rng, text)
        text = _vary_case(rng, text)
        bodies.append(
            {
                "message": text,
                "user_id": f"user-{rng.randrange(USER_POPULATION):05d}",
                "session_id": f"s{seed}-{i:06d}",
            }
        )
    return bodies


# --------------------------------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class TrafficReport:
    """What a traffic run did: outcomes, error kinds, models that answered, and client-side latency."""

    requests: int
    ok: int
    errors: dict[str, int] = field(default_factory=dict)
    by_model: dict[str, int] = field(default_factory=dict)
    llm_calls: int = 0
    tool_calls: int = 0
    duration_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list, repr=False)

    @property
    def failed(self) -> int:
        """Requests that did not get a reply."""
        return self.requests - self.ok

    def latency_summary(self) -> dict[str, float]:
        """Mean, p50, p90, p95, p99 and max of successful requests, in seconds."""
        values = self.latencies_s
        return {
            "mean": sum(values) / len(values) if values else 0.0,
            "p50": percentile(values, 50),
            "p90": percentile(values, 90),
            "p95": percentile(values, 95),
            "p99": percentile(values, 99),
            "max": max(values, default=0.0),
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (what the CLI prints)."""
        return {
            "requests": self.requests,
            "ok": self.ok,
            "failed": self.failed,
            "errors": dict(sorted(self.errors.items())),
            "by_model": dict(sorted(self.by_model.items())),
            "llm_calls": self.llm_calls,
            "tool_calls": self.tool_calls,
            "duration_s": round(self.duration_s, 3),
            "throughput_rps": round(self.ok / self.duration_s, 3) if self.duration_s > 0 else 0.0,
            "latency_s": {k: round(v, 4) for k, v in self.latency_summary().items()},
        }


def _error_kind(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    return "transport"


async def send_traffic(
    agent_url: str,
    bodies: Sequence[dict[str, Any]],
    concurrency: int = 4,
    timeout_s: float = 120.0,
    on_result: Callable[[int, dict[str, Any] | None], None] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> TrafficReport:
    """Send the request bodies to ``{agent_url}/v1/chat`` with at most ``concurrency`` in flight.

    Error kinds: ``http_<status>`` (e.g. ``http_502`` when the NIM failed), ``timeout``, ``connect``,
    ``transport``, ``bad_response``. ``on_result(i, response_or_None)`` is called after each request;
    ``transport`` replaces the network (tests pass an ASGI transport).
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    report = TrafficReport(requests=len(bodies), ok=0)
    url = agent_url.rstrip("/") + "/v1/chat"
    next_index = iter(range(len(bodies)))

    def count_error(kind: str) -> None:
        report.errors[kind] = report.errors.get(kind, 0) + 1

    async def one(client: httpx.AsyncClient, i: int) -> dict[str, Any] | None:
        t0 = time.perf_counter()
        try:
            response = await client.post(url, json=bodies[i])
        except httpx.HTTPError as exc:
            count_error(_error_kind(exc))
            return None
        if response.status_code != 200:
            count_error(f"http_{response.status_code}")
            return None
        try:
            answer = response.json()
            model = str(answer["model"])
        except (ValueError, KeyError, TypeError):
            count_error("bad_response")
            return None
        report.latencies_s.append(time.perf_counter() - t0)
        report.ok += 1
        report.by_model[model] = report.by_model.get(model, 0) + 1
        report.llm_calls += len(answer.get("llm_calls") or [])
        report.tool_calls += len(answer.get("tool_calls") or [])
        return dict(answer)

    async def worker(client: httpx.AsyncClient) -> None:
        for i in next_index:  # one shared iterator: each index is taken by exactly one worker
            answer = await one(client, i)
            if on_result is not None:
                on_result(i, answer)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits, transport=transport) as client:
        await asyncio.gather(*(worker(client) for _ in range(min(concurrency, max(len(bodies), 1)))))
    report.duration_s = time.perf_counter() - started
    return report


def run_traffic(
    agent_url: str, requests: int = 100, concurrency: int = 4, seed: int = 0, timeout_s: float = 120.0
) -> TrafficReport:
    """Send ``requests`` synthetic messages (seeded) to the agent and report; what ``flywheel traffic`` runs.

    Synchronous (it runs its own event loop); inside async code, await :func:`send_traffic` instead.
    """
    return asyncio.run(send_traffic(agent_url, synthetic_messages(requests, seed), concurrency, timeout_s))
