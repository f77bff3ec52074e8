"""The blueprint's published example records, verbatim: shared by the record, extraction and end-to-end tests."""

from __future__ import annotations

from typing import Any

# The blueprint's tool-calling example (AIVA, docs/02-quickstart.md), verbatim.
AIVA: dict[str, Any] = {
    "timestamp": 1746138417,
    "workload_id": "primary_assistant",
    "client_id": "aiva-1",
    "request": {
        "model": "meta/llama-3.1-70b-instruct",
        "messages": [
            {"role": "system", "content": "You are a chatbot that helps with purchase history."},
            {"role": "user", "content": "Has my bill been processed?"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "structured_rag",
                    "parameters": {
                        "properties": {"query": {"type": "string"}, "user_id": {"type": "string"}},
                        "required": ["query", "user_id"],
                    },
                },
            }
        ],
    },
    "response": {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "type": "function",
                            "function": {
                                "name": "structured_rag",
                                "arguments": {"query": "account bill processed", "user_id": "4165"},
                            },
                        }
                    ],
                }
            }
        ]
    },
}

# The blueprint README's generic (no tools) example.
GENERIC: dict[str, Any] = {
    "timestamp": 1715854074,
    "workload_id": "hr_assistant",
    "client_id": "dev",
    "request": {
        "model": "meta/llama-3.1-70b-instruct",
        "messages": [
            {"role": "system", "content": "You are a helpful HR assistant."},
            {"role": "user", "content": "What is the policy on remote work?"},
        ],
        "temperature": 0.2,
        "max_tokens": 1024,
    },
    "response": {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1715854074,
        "model": "meta/llama-3.1-70b-instruct",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "According to the HR policy, employees may work remotely."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 15, "completion_tokens": 72, "total_tokens": 87},
    },
}

# The log index as the blueprint's ``es_client.get_es_client()`` creates it (``ES_INDEX_SETTINGS``), verbatim.
BLUEPRINT_INDEX_BODY: dict[str, Any] = {
    "mappings": {
        "dynamic": "strict",
        "properties": {
            "workload_id": {"type": "keyword"},
            "client_id": {"type": "keyword"},
            "timestamp": {"type": "date"},
            "request": {"type": "object", "dynamic": False, "properties": {}},
            "response": {"type": "object", "dynamic": False, "properties": {}},
        },
    },
    "settings": {"mapping": {"total_fields": {"limit": 1000}}, "index": {"mapping": {"ignore_malformed": True}}},
}
