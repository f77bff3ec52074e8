"""The demo agent's tools: schemas the OpenAI API accepts, a deterministic backend, readable errors."""

from __future__ import annotations

import json

import pytest

from simulators.agent.tools import (
    CATALOG,
    RETURN_REASONS,
    TODAY,
    TOOL_SPECS,
    TOOLS,
    lookup_order,
    normalise_order_id,
    run_tool,
)


def test_every_tool_schema_is_a_valid_small_function_with_required_fields() -> None:
    names = [tool["function"]["name"] for tool in TOOLS]
    assert sorted(names) == sorted(TOOL_SPECS)
    assert len(set(names)) == len(names)
    for tool in TOOLS:
        assert tool["type"] == "function"
        function = tool["function"]
        assert function["description"]
        params = function["parameters"]
        assert params["type"] == "object"
        assert 1 <= len(params["properties"]) <= 8
        assert params["required"] and set(params["required"]) <= set(params["properties"])
        for prop in params["properties"].values():
            assert prop["type"] in {"string", "integer", "boolean"}
            if "enum" in prop:
                assert prop["enum"] and all(isinstance(v, str) for v in prop["enum"])
    json.dumps(TOOLS)  # serialisable as is


def test_start_return_offers_the_reason_enum() -> None:
    start_return = next(t for t in TOOLS if t["function"]["name"] == "start_return")
    assert start_return["function"]["parameters"]["properties"]["reason"]["enum"] == list(RETURN_REASONS)


@pytest.mark.parametrize("raw", ["ORD-10234", "ord-10234", "ord 10234", "#10234", "10234", " Order:10234 ", "ORD10234"])
def test_order_ids_are_normalised_from_what_people_write(raw: str) -> None:
    assert normalise_order_id(raw) == "ORD-10234"


def test_orders_are_deterministic_and_only_the_known_range_exists() -> None:
    first = lookup_order("ORD-10042")
    assert first == lookup_order("#10042")
    assert first is not None and first["order_id"] == "ORD-10042"
    assert first["items"] and first["total"] == round(sum(i["unit_price"] * i["quantity"] for i in first["items"]), 2)
    assert lookup_order("ORD-99999") is None
    statuses = {lookup_order(f"ORD-{n}")["status"] for n in range(10000, 10200)}  # type: ignore[index]
    assert statuses == {"processing", "shipped", "out_for_delivery", "delivered", "cancelled"}


def test_get_order_status_found_missing_and_malformed() -> None:
    found = run_tool("get_order_status", '{"order_id": "ORD-10001"}')
    assert found.ok and found.output["found"] is True and found.arguments == {"order_id": "ORD-10001"}
    missing = run_tool("get_order_status", {"order_id": "ORD-55555"})
    assert missing.ok and missing.output["found"] is False
    malformed = run_tool("get_order_status", {"order_id": "my order"})
    assert not malformed.ok and "ORD-12345" in (malformed.error or "")
    absent = run_tool("get_order_status", {})
    assert not absent.ok and "order_id" in (absent.error or "")


def _order_with(status: str) -> str:
    for n in range(10000, 11000):
        order = lookup_order(f"ORD-{n}")
        if order and order["status"] == status:
            return order["order_id"]
    raise AssertionError(status)


def test_start_return_follows_the_shop_policy() -> None:
    delivered = _order_with("delivered")
    opened = run_tool("start_return", {"order_id": delivered, "reason": "Damaged"})
    assert opened.ok and opened.output["eligible"] is True
    assert opened.output["return_id"].startswith("RMA-")
    assert opened.output == run_tool("start_return", {"order_id": delivered, "reason": "damaged"}).output
    processing = run_tool("start_return", {"order_id": _order_with("processing"), "reason": "other"})
    assert processing.ok and processing.output["eligible"] is False
    bad_reason = run_tool("start_return", {"order_id": delivered, "reason": "felt like it"})
    assert not bad_reason.ok and "damaged" in (bad_reason.error or "")


def test_refund_status_is_deterministic() -> None:
    order_id = _order_with("delivered")
    assert (
        run_tool("get_refund_status", {"order_id": order_id}).output
        == run_tool("get_refund_status", {"order_id": order_id}).output
    )


def test_search_products_ranks_name_matches_and_filters() -> None:
    result = run_tool("search_products", {"query": "wireless headphones"})
    assert result.ok and result.output["results"][0]["product_id"] == "P-1001"
    kitchen = run_tool("search_products", {"query": "knife", "category": "kitchen"}).output
    assert kitchen["results"] and all(r["category"] == "kitchen" for r in kitchen["results"])
    in_stock = run_tool("search_products", {"query": "backpack", "in_stock_only": True}).output
    assert all(r["in_stock"] for r in in_stock["results"])
    assert not run_tool("search_products", {"query": "tent", "max_results": 50}).ok
    assert run_tool("search_products", {"query": "tent", "max_results": "2"}).ok


def test_product_details_and_escalation() -> None:
    product = CATALOG[0]
    details = run_tool("get_product_details", {"product_id": product.product_id.lower()})
    assert details.ok and details.output["name"] == product.name and "warranty_months" in details.output
    assert run_tool("get_product_details", {"product_id": "P-0000"}).output["found"] is False
    ticket = run_tool("escalate_to_human", {"summary": "double charge", "priority": "high"})
    assert ticket.ok and ticket.output["ticket_id"].startswith("TCK-") and ticket.output["priority"] == "high"


def test_unknown_tools_and_bad_arguments_become_error_results() -> None:
    unknown = run_tool("delete_everything", {})
    assert not unknown.ok and "unknown tool" in (unknown.error or "")
    not_json = run_tool("get_order_status", "{not json")
    assert not not_json.ok and not_json.output == {"error": "arguments must be a JSON object"}
    assert not run_tool("get_order_status", {"order_id": ["ORD-10001"]}).ok


def test_backend_today_is_fixed() -> None:
    assert TODAY.isoformat() == "2025-06-01"
