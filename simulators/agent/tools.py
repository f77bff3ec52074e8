"""The demo agent's tools: OpenAI function schemas and a fake, deterministic shop behind them.

The flywheel learns from which tool the teacher picks and with which arguments, so the tools must look
like a real support backend (ids, enums, errors for bad input) while staying reproducible: every order is
derived from its number by a hash, the catalogue is a constant, and "today" is a fixed date. Calling a tool
twice with the same arguments gives the same answer, and a bad argument gives an error result the model
can read, never an exception.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

TODAY = date(2025, 6, 1)  # the fake backend's "today", so return windows never drift
FIRST_ORDER, LAST_ORDER = 10000, 10999  # ORD-10000 .. ORD-10999 exist
RETURN_WINDOW_DAYS = 30
CATEGORIES = ("electronics", "home", "kitchen", "outdoors", "apparel")
RETURN_REASONS = ("damaged", "wrong_item", "not_as_described", "no_longer_needed", "arrived_late", "other")
PRIORITIES = ("low", "normal", "high")
ORDER_STATUSES = ("processing", "shipped", "out_for_delivery", "delivered", "cancelled")
_STATUS_WEIGHTS = (2, 3, 1, 7, 1)  # most orders are delivered, as in a real shop
CARRIERS = ("UPS", "FedEx", "USPS", "DHL")


@dataclass(frozen=True)
class Product:
    """One catalogue entry."""

    product_id: str
    name: str
    category: str
    price: float
    stock: int
    rating: float
    description: str
    warranty_months: int = 12

    def summary(self) -> dict[str, Any]:
        """The short form used in search results."""
        return {
            "product_id": self.product_id,
            "name": self.name,
            "category": self.category,
            "price": self.price,
            "in_stock": self.stock > 0,
        }

    def details(self) -> dict[str, Any]:
        """Everything a customer may ask about."""
        return {
            **self.summary(),
            "stock": self.stock,
            "rating": self.rating,
            "description": self.description,
            "warranty_months": self.warranty_months,
        }


CATALOG: tuple[Product, ...] = (
    Product("P-1001", "Aurora Wireless Headphones", "electronics", 129.99, 42, 4.6,
            "Over-ear noise-cancelling headphones with 30-hour battery and USB-C charging.", 24),
    Product("P-1002", "Nimbus Smart Speaker", "electronics", 79.00, 18, 4.3,
            "Voice-controlled speaker with room-filling sound and a built-in smart home hub."),
    Product("P-1003", "Volt 65W USB-C Charger", "electronics", 39.50, 120, 4.7,
            "Compact GaN charger with two USB-C ports; charges a laptop and a phone together."),
    Product("P-1004", "Pixel Trail 4K Action Camera", "electronics", 249.00, 0, 4.4,
            "Waterproof to 10 m, image stabilisation, 4K at 60 fps; ships with a helmet mount.", 24),
    Product("P-2001", "Cedar Standing Desk", "home", 399.00, 7, 4.5,
            "Electric height-adjustable desk, 120x60 cm solid oak top, memory presets.", 60),
    Product("P-2002", "Lumen LED Desk Lamp", "home", 45.00, 64, 4.2,
            "Dimmable desk lamp with five colour temperatures and a wireless charging base."),
    Product("P-3001", "Forge Cast Iron Skillet", "kitchen", 34.99, 85, 4.8,
            "Pre-seasoned 26 cm cast iron skillet, oven safe, works on induction.", 120),
    Product("P-3002", "Brewmaster Pour-Over Kettle", "kitchen", 59.00, 23, 4.5,
            "Gooseneck electric kettle with temperature control and keep-warm mode."),
    Product("P-3003", "Keen Edge Chef's Knife", "kitchen", 89.00, 31, 4.7,
            "20 cm forged stainless steel chef's knife with a full tang and a pakkawood handle.", 120),
    Product("P-4001", "Summit 2-Person Tent", "outdoors", 189.00, 12, 4.4,
            "Three-season backpacking tent, 1.9 kg, two doors, pitches in five minutes.", 24),
    Product("P-4002", "Trailhead 40L Hiking Backpack", "outdoors", 119.00, 0, 4.6,
            "Ventilated back panel, rain cover, hydration sleeve, adjustable torso length.", 24),
    Product("P-5001", "Merino Wool Hoodie", "apparel", 98.00, 55, 4.3,
            "Soft 100% merino hoodie that regulates temperature and resists odour.", 6),
    Product("P-5002", "Stride Running Shoes", "apparel", 129.00, 40, 4.1,
            "Lightweight cushioned road running shoes with a breathable knit upper.", 6),
)  # fmt: skip
_PRODUCTS = {p.product_id: p for p in CATALOG}


class ToolArgumentError(ValueError):
    """The model called a tool with arguments the tool cannot use; the message is shown to the model."""


# --------------------------------------------------------------------------------------------------
# Fake backend: orders derived from their number
# --------------------------------------------------------------------------------------------------


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()


def _weighted(byte: int, options: tuple[str, ...], weights: tuple[int, ...]) -> str:
    point = byte % sum(weights)
    for option, weight in zip(options, weights, strict=True):
        if point < weight:
            return option
        point -= weight
    return options[-1]


_ORDER_ID = re.compile(r"^\s*#?\s*(?:ord(?:er)?)?[\s#:_-]*(\d{5})\s*$", re.IGNORECASE)


def normalise_order_id(order_id: object) -> str:
    """``ORD-12345`` from what customers and models write (``ord 12345``, ``#12345``, ``12345``)."""
    match = _ORDER_ID.match(str(order_id))
    if match is None:
        raise ToolArgumentError(f"'{order_id}' is not an order id; order ids look like ORD-12345")
    return f"ORD-{match.group(1)}"


def lookup_order(order_id: object) -> dict[str, Any] | None:
    """The order with this id, or None when the shop has no such order (the id must be well-formed)."""
    oid = normalise_order_id(order_id)
    number = int(oid[4:])
    if not FIRST_ORDER <= number <= LAST_ORDER:
        return None
    h = _digest("order", number)
    status = _weighted(h[0], ORDER_STATUSES, _STATUS_WEIGHTS)
    ordered = TODAY - timedelta(days=3 + h[1] % 60)
    items: list[dict[str, Any]] = []
    for i in range(1 + h[2] % 3):
        product = CATALOG[h[3 + i] % len(CATALOG)]
        if any(item["product_id"] == product.product_id for item in items):
            continue
        items.append(
            {
                "product_id": product.product_id,
                "name": product.name,
                "quantity": 1 + h[6 + i] % 2,
                "unit_price": product.price,
            }
        )
    order: dict[str, Any] = {
        "order_id": oid,
        "status": status,
        "ordered_on": ordered.isoformat(),
        "items": items,
        "total": round(sum(item["unit_price"] * item["quantity"] for item in items), 2),
    }
    if status in ("shipped", "out_for_delivery", "delivered"):
        order["carrier"] = CARRIERS[h[9] % len(CARRIERS)]
        order["tracking_number"] = f"1Z{h[10:16].hex().upper()}"
        shipped = ordered + timedelta(days=1 + h[16] % 3)
        order["shipped_on"] = min(shipped, TODAY).isoformat()
    if status == "delivered":
        delivered = min(ordered + timedelta(days=3 + h[17] % 5), TODAY)
        order["delivered_on"] = delivered.isoformat()
    elif status in ("shipped", "out_for_delivery"):
        order["estimated_delivery"] = (
            TODAY + timedelta(days=0 if status == "out_for_delivery" else 1 + h[18] % 4)
        ).isoformat()
    return order


def existing_order_ids() -> list[str]:
    """Every order id the fake shop knows (the traffic generator draws from these)."""
    return [f"ORD-{n}" for n in range(FIRST_ORDER, LAST_ORDER + 1)]


# --------------------------------------------------------------------------------------------------
# Tool implementations
# --------------------------------------------------------------------------------------------------


def _text(arguments: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = arguments.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ToolArgumentError(f"missing required argument '{key}'")
        return None
    if not isinstance(value, str | int | float):
        raise ToolArgumentError(f"argument '{key}' must be a string")
    return str(value).strip()


def _choice(arguments: Mapping[str, Any], key: str, options: tuple[str, ...], default: str | None = None) -> str:
    """An enum argument, forgiving about case, spaces and dashes; ``default`` when absent (else required)."""
    raw = arguments.get(key)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if default is None:
            raise ToolArgumentError(f"missing required argument '{key}'")
        return default
    if not isinstance(raw, str):
        raise ToolArgumentError(f"argument '{key}' must be one of {', '.join(options)}")
    value = raw.strip().lower().replace(" ", "_").replace("-", "_")
    if value not in options:
        raise ToolArgumentError(f"'{raw}' is not a valid {key}; use one of {', '.join(options)}")
    return value


def get_order_status(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Where an order is: status, items, dates, carrier and tracking number."""
    order_id = _text(arguments, "order_id")
    order = lookup_order(order_id)
    if order is None:
        return {"found": False, "order_id": normalise_order_id(order_id), "message": "No order with this id."}
    return {"found": True, **order}


def start_return(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Open a return (RMA) for a delivered order inside the return window; explain why not otherwise."""
    order_id = _text(arguments, "order_id")
    reason = _choice(arguments, "reason", RETURN_REASONS)
    product_id = _text(arguments, "product_id", required=False)
    order = lookup_order(order_id)
    if order is None:
        return {"eligible": False, "order_id": normalise_order_id(order_id), "message": "No order with this id."}
    items = order["items"]
    if product_id is not None:
        items = [item for item in items if item["product_id"].lower() == product_id.lower()]
        if not items:
            return {"eligible": False, "order_id": order["order_id"], "message": f"{product_id} is not in this order."}
    if order["status"] == "cancelled":
        return {
            "eligible": False,
            "order_id": order["order_id"],
            "message": "The order was cancelled; nothing to return.",
        }
    if order["status"] != "delivered":
        return {
            "eligible": False,
            "order_id": order["order_id"],
            "message": f"The order is {order['status'].replace('_', ' ')}; returns open once it is delivered.",
        }
    days = (TODAY - date.fromisoformat(order["delivered_on"])).days
    if days > RETURN_WINDOW_DAYS and reason not in ("damaged", "wrong_item"):
        return {
            "eligible": False,
            "order_id": order["order_id"],
            "message": f"Delivered {days} days ago; the return window is {RETURN_WINDOW_DAYS} days.",
        }
    refund = round(sum(item["unit_price"] * item["quantity"] for item in items), 2)
    free_label = reason in ("damaged", "wrong_item", "not_as_described")
    return {
        "eligible": True,
        "order_id": order["order_id"],
        "return_id": "RMA-" + _digest("rma", order["order_id"], product_id or "all").hex()[:8].upper(),
        "reason": reason,
        "items": [item["product_id"] for item in items],
        "refund_amount": refund,
        "return_shipping": "free prepaid label" if free_label else "customer pays return shipping",
        "refund_eta_days": 5 + _digest("eta", order["order_id"])[0] % 6,
    }


def get_refund_status(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Whether a refund exists for the order and where it stands."""
    order_id = _text(arguments, "order_id")
    order = lookup_order(order_id)
    if order is None:
        return {"found": False, "order_id": normalise_order_id(order_id), "message": "No order with this id."}
    h = _digest("refund", order["order_id"])
    if order["status"] == "cancelled":
        return {
            "found": True,
            "order_id": order["order_id"],
            "refund_status": "refunded",
            "amount": order["total"],
            "refunded_on": (date.fromisoformat(order["ordered_on"]) + timedelta(days=2)).isoformat(),
        }
    if order["status"] != "delivered" or h[0] % 3 == 0:
        return {
            "found": True,
            "order_id": order["order_id"],
            "refund_status": "none",
            "message": "No refund has been requested for this order.",
        }
    status = ("requested", "processing", "refunded")[h[1] % 3]
    return {
        "found": True,
        "order_id": order["order_id"],
        "refund_status": status,
        "amount": order["items"][0]["unit_price"],
        "method": "original payment method",
    }


_WORD = re.compile(r"[a-z0-9]+")


def search_products(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Catalogue search by words in name, description and category, best matches first."""
    query = _text(arguments, "query") or ""
    category = _choice(arguments, "category", CATEGORIES, default="") or None
    raw_max = arguments.get("max_results")
    try:
        max_results = 5 if raw_max is None else int(raw_max)  # models sometimes send "5"
    except (TypeError, ValueError):
        max_results = 0
    if isinstance(raw_max, bool) or not 1 <= max_results <= 10:
        raise ToolArgumentError("max_results must be an integer from 1 to 10")
    in_stock_only = bool(arguments.get("in_stock_only", False))
    words = {w for w in _WORD.findall(query.lower()) if len(w) > 1}
    scored = []
    for product in CATALOG:
        if category and product.category != category:
            continue
        if in_stock_only and product.stock <= 0:
            continue
        name_words = set(_WORD.findall(product.name.lower()))
        text_words = set(_WORD.findall(f"{product.description} {product.category}".lower()))
        score = 3 * len(words & name_words) + len(words & text_words)
        score += sum(1 for w in words if len(w) > 3 and any(n.startswith(w[:4]) for n in name_words))
        if score > 0 or not words:
            scored.append((-score, product.product_id, product))
    scored.sort()
    results = [product.summary() for _, _, product in scored[:max_results]]
    return {"query": query, "category": category, "count": len(results), "results": results}


def get_product_details(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The full catalogue entry: price, stock, rating, description and warranty."""
    product_id = (_text(arguments, "product_id") or "").upper()
    product = _PRODUCTS.get(product_id)
    if product is None:
        return {"found": False, "product_id": product_id, "message": "No product with this id; search first."}
    return {"found": True, **product.details()}


def escalate_to_human(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Hand the conversation to a person: a ticket id and the expected wait."""
    summary = _text(arguments, "summary") or ""
    priority = _choice(arguments, "priority", PRIORITIES, default="normal")
    order_id = _text(arguments, "order_id", required=False)
    h = _digest("ticket", summary, priority, order_id or "")
    wait = {"high": 5, "normal": 30, "low": 240}[priority]
    return {
        "ticket_id": f"TCK-{h.hex()[:6].upper()}",
        "priority": priority,
        "order_id": order_id,
        "expected_wait_minutes": wait + h[0] % 10,
    }


# --------------------------------------------------------------------------------------------------
# Schemas and dispatch
# --------------------------------------------------------------------------------------------------

_ORDER_ID_PROP = {"type": "string", "description": "The order id, e.g. ORD-10234"}


def _function(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


TOOLS: list[dict[str, Any]] = [
    _function("get_order_status", "Look up an order: status, items, shipping carrier, tracking and delivery dates.",
              {"order_id": _ORDER_ID_PROP}, ["order_id"]),
    _function("start_return", "Start a return for a delivered order and get a return id (RMA) and refund amount.",
              {"order_id": _ORDER_ID_PROP,
               "reason": {"type": "string", "enum": list(RETURN_REASONS), "description": "Why the customer returns it"},
               "product_id": {"type": "string", "description": "Only this item of the order (default: every item)"}},
              ["order_id", "reason"]),
    _function("get_refund_status", "Check whether an order has a refund and where it stands.",
              {"order_id": _ORDER_ID_PROP}, ["order_id"]),
    _function("search_products", "Search the product catalogue by keywords, optionally within a category.",
              {"query": {"type": "string", "description": "Keywords, e.g. 'wireless headphones'"},
               "category": {"type": "string", "enum": list(CATEGORIES)},
               "max_results": {"type": "integer", "minimum": 1, "maximum": 10, "default": 5},
               "in_stock_only": {"type": "boolean", "default": False}},
              ["query"]),
    _function("get_product_details", "Get price, stock, rating, description and warranty of one product.",
              {"product_id": {"type": "string", "description": "The product id, e.g. P-1001"}}, ["product_id"]),
    _function("escalate_to_human", "Hand the conversation to a human agent when the customer asks for one or "
              "the problem cannot be solved with the other tools.",
              {"summary": {"type": "string", "description": "One or two sentences a human agent can act on"},
               "priority": {"type": "string", "enum": list(PRIORITIES)},
               "order_id": _ORDER_ID_PROP},
              ["summary", "priority"]),
]  # fmt: skip


@dataclass(frozen=True)
class ToolSpec:
    """A tool's implementation and its simulated backend latency (seconds)."""

    run: Callable[[Mapping[str, Any]], dict[str, Any]]
    latency_s: float


TOOL_SPECS: dict[str, ToolSpec] = {
    "get_order_status": ToolSpec(get_order_status, 0.04),
    "start_return": ToolSpec(start_return, 0.08),
    "get_refund_status": ToolSpec(get_refund_status, 0.04),
    "search_products": ToolSpec(search_products, 0.06),
    "get_product_details": ToolSpec(get_product_details, 0.03),
    "escalate_to_human": ToolSpec(escalate_to_human, 0.10),
}


@dataclass
class ToolResult:
    """What one tool call did: the output shown to the model, and whether it was an error."""

    name: str
    arguments: Any
    output: dict[str, Any]
    ok: bool
    error: str | None = None
    call_id: str = ""
    latency_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The form returned in the chat response's ``tool_calls``."""
        return {
            "id": self.call_id,
            "name": self.name,
            "arguments": self.arguments,
            "result": self.output,
            "ok": self.ok,
            "error": self.error,
            "latency_s": round(self.latency_s, 6),
        }


def _decoded(arguments: Any) -> Any:
    """Arguments as the model sent them, decoded: a JSON string becomes its value; anything else stays as it is."""
    if arguments is None or arguments == "":
        return {}
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except (ValueError, RecursionError):  # not JSON: the tool reports that it is not an object
        return arguments


def run_tool(name: str, arguments: Any) -> ToolResult:
    """Run a tool by name; unknown tools and bad arguments become error results the model can read."""
    parsed = _decoded(arguments)
    spec = TOOL_SPECS.get(name)
    if spec is None:
        error = f"unknown tool '{name}'; available: {', '.join(TOOL_SPECS)}"
        return ToolResult(name, parsed, {"error": error}, ok=False, error=error)
    if not isinstance(parsed, Mapping):
        error = "arguments must be a JSON object"
        return ToolResult(name, parsed, {"error": error}, ok=False, error=error)
    try:
        return ToolResult(name, dict(parsed), spec.run(parsed), ok=True)
    except ToolArgumentError as exc:
        return ToolResult(name, dict(parsed), {"error": str(exc)}, ok=False, error=str(exc))


def tool_latency(name: str) -> float:
    """The simulated backend latency of a tool (0 for unknown tools, which fail at once)."""
    spec = TOOL_SPECS.get(name)
    return spec.latency_s if spec else 0.0
