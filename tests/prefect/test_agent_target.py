"""The AgentTarget block builds the agent's clients: base URL set, credentials only in their headers."""

from __future__ import annotations

import asyncio

from pydantic import SecretStr

from blocks.agent_target import AgentTarget


def test_clients_carry_the_base_url_and_the_api_key() -> None:
    agent = AgentTarget(url="http://agent.example:8080/app", api_key=SecretStr("s3cret"))
    with agent.get_client(timeout_s=3.0) as http:
        assert str(http.base_url) == "http://agent.example:8080/app/"
        assert http.headers["Authorization"] == "Bearer s3cret"
        assert http.timeout.read == 3.0

    async def async_clients() -> tuple[str, str, str]:
        async with agent.get_async_client(max_connections=4) as client, agent.get_load_client() as load:
            return str(client.base_url), client.headers["Authorization"], load.headers["Authorization"]

    base, header, load_header = asyncio.run(async_clients())
    assert base == "http://agent.example:8080/app/"
    assert header == load_header == "Bearer s3cret"
    assert "s3cret" not in repr(agent)


def test_no_api_key_no_authorization_header() -> None:
    agent = AgentTarget(url="http://agent.example:8080")
    with agent.get_client() as http:
        assert "Authorization" not in http.headers

    async def load_headers() -> dict[str, str]:
        async with agent.get_load_client() as load:
            return dict(load.headers)

    assert "Authorization" not in asyncio.run(load_headers())
