"""List queries of the NeMo simulator: bracket-nested filters, sorting, and the empty page past the end."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import HTTPException

from simulators.nemo.pagination import (
    envelope,
    list_page,
    matches,
    order,
    parse_list_query,
    select,
    split_bracket_key,
)

RECORDS: list[dict[str, Any]] = [
    {
        "name": f"m{i}",
        "namespace": "dfwbp" if i % 2 else "other",
        "created_at": f"2025-06-{10 + i:02d}T00:00:00",
        "status": "running" if i < 3 else "completed",
        "peft": {"finetuning_type": "lora"} if i % 3 == 0 else None,
        "hyperparameters": {"epochs": i, "lora": {"adapter_dim": 32}},
        "enabled": i % 2 == 0,
    }
    for i in range(7)
]


def test_split_bracket_key() -> None:
    assert split_bracket_key("filter[peft][lora]") == ["filter", "peft", "lora"]
    assert split_bracket_key("filter") == ["filter"]
    assert split_bracket_key("filter[a]x") is None
    assert split_bracket_key("search[created_at][start]") == ["search", "created_at", "start"]


def test_parse_nests_filters_and_searches() -> None:
    query = parse_list_query(
        [
            ("page", "2"),
            ("page_size", "3"),
            ("sort", "-created_at"),
            ("filter[status]", "running"),
            ("filter[peft][finetuning_type]", "lora"),
            ("search[created_at][start]", "2025-06-12T00:00:00"),
            ("unrelated", "x"),
        ]
    )
    assert (query.page, query.page_size, query.sort) == (2, 3, "-created_at")
    assert query.filters == {"status": "running", "peft": {"finetuning_type": "lora"}}
    assert query.search == {"created_at": {"start": "2025-06-12T00:00:00"}}


@pytest.mark.parametrize(
    ("key", "value", "kind"),
    [
        ("page", "0", "greater_than_equal"),
        ("page", "x", "int_parsing"),
        ("page_size", "-1", "greater_than_equal"),
        ("sort", "-bogus", "enum"),
    ],
)
def test_bad_query_values_are_fastapi_422s(key: str, value: str, kind: str) -> None:
    with pytest.raises(HTTPException) as caught:
        parse_list_query([(key, value)])
    assert caught.value.status_code == 422
    detail: list[dict[str, Any]] = caught.value.detail  # type: ignore[assignment]
    assert detail[0]["loc"] == ["query", key] and detail[0]["type"] == kind


def test_matches_compares_query_strings_with_typed_values() -> None:
    assert matches(True, "true") and not matches(True, "false")
    assert matches(3, "3") and matches(0.5, "0.50") and not matches(3, "three")
    assert matches("running", "pending,running") and not matches("failed", "pending,running")
    assert matches({"finetuning_type": "lora"}, "true") and matches(None, "null")
    assert matches({"finetuning_type": "lora"}, {"finetuning_type": "lora"})
    assert not matches(None, {"finetuning_type": "lora"})
    assert matches({"namespace": "ns", "name": "cfg"}, "ns/cfg")
    assert matches(["a", "b"], "b")
    assert matches("2025-06-12T00:00:00", {"gte": "2025-06-12T00:00:00", "lte": "2025-06-13T00:00:00"})
    assert not matches("2025-06-14T00:00:00", {"lte": "2025-06-13T00:00:00"})
    assert matches(5, {"gt": "4"}) and not matches(None, {"gt": "4"})
    assert matches("meta/llama-3.2-1b", "llama", substring=True)


def test_select_and_order() -> None:
    query = parse_list_query([("filter[namespace]", "dfwbp"), ("filter[hyperparameters][epochs]", "3")])
    assert [r["name"] for r in select(RECORDS, query)] == ["m3"]
    query = parse_list_query([("filter[peft][finetuning_type]", "lora")])
    assert [r["name"] for r in select(RECORDS, query)] == ["m0", "m3", "m6"]
    query = parse_list_query([("search[name]", "m1,m2")])
    assert [r["name"] for r in select(RECORDS, query)] == ["m1", "m2"]
    newest_first = order(list(RECORDS), "-created_at")
    assert [r["name"] for r in newest_first][:2] == ["m6", "m5"]
    resolved = select(
        RECORDS, parse_list_query([("filter[epochs]", "2")]), {"epochs": lambda r: r["hyperparameters"]["epochs"]}
    )
    assert [r["name"] for r in resolved] == ["m2"]


def test_envelope_and_the_page_past_the_end() -> None:
    first = list_page(RECORDS, [("page_size", "3")])
    assert first["object"] == "list" and first["sort"] == "created_at"
    assert first["pagination"] == {
        "page": 1,
        "page_size": 3,
        "current_page_size": 3,
        "total_pages": 3,
        "total_results": 7,
    }
    last = list_page(RECORDS, [("page_size", "3"), ("page", "3")])
    assert [r["name"] for r in last["data"]] == ["m6"]
    past = list_page(RECORDS, [("page_size", "3"), ("page", "4")])
    assert past["data"] == [] and past["pagination"]["current_page_size"] == 0
    empty = envelope([], parse_list_query([]))
    assert empty["data"] == [] and empty["pagination"]["total_pages"] == 0
