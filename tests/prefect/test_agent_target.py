"""The AgentTarget block builds the agent's clients (base URL set, credentials only in their headers) and its
request template (a preset, or the block's own)."""

from __future__ import annotations

import asyncio
import pickle
from typing import get_args

import pytest
from pydantic import SecretStr, ValidationError

from agent_flywheel.scaling.loadgen.template import PRESETS
from blocks.agent_target import AgentTarget, PresetName


def test_clients_carry_the_base_url_and_the_api_key() -> None:
    agent = AgentTarget(url="http://agent.example:8080/app", api_key=SecretStr("s3cret"))
    with agent.get_client(timeout_s=3.0) as http:
        assert str(http.base_url) == "http://agent.example:8080/app/"
        assert http.headers["Authorization"] == "Bearer s3cret"
        assert http.timeout.read == 3.0

    async def async_clients() -> tuple[str, str, str]:
        load_client = agent.load_generator(["hi"]).client(4)
        async with agent.get_async_client(max_connections=4) as client, load_client as load:
            return str(client.base_url), client.headers["Authorization"], load.headers["Authorization"]

    base, header, load_header = asyncio.run(async_clients())
    assert base == "http://agent.example:8080/app/"
    assert header == load_header == "Bearer s3cret"
    assert "s3cret" not in repr(agent)
    setup = agent.load_generator(["hi"], timeout_s=7.0)
    assert (setup.base_url, setup.timeout_s) == ("http://agent.example:8080/app", 7.0)
    assert pickle.loads(pickle.dumps(setup)).headers == {"Authorization": "Bearer s3cret"}  # crosses into processes


def test_no_api_key_no_authorization_header() -> None:
    agent = AgentTarget(url="http://agent.example:8080")
    with agent.get_client() as http:
        assert "Authorization" not in http.headers

    async def load_headers() -> dict[str, str]:
        async with agent.load_generator(["hi"]).client(4) as load:
            return dict(load.headers)

    assert "Authorization" not in asyncio.run(load_headers())


def test_the_block_offers_every_preset_and_builds_its_template() -> None:
    assert set(get_args(PresetName)) == set(PRESETS)
    demo = AgentTarget()
    assert demo.request_template().path == "/v1/chat" and demo.uses_admin_otlp  # the demo agent has /admin/otlp
    nat = AgentTarget(url="http://nat:8000", preset="nat-generate", headers={"X-Team": "a"})
    template = nat.request_template()
    assert (template.path, template.answer_path, dict(template.headers)) == ("/generate", "value", {"X-Team": "a"})
    assert not nat.uses_admin_otlp  # never asked of an agent we did not write
    graph = AgentTarget(preset="langgraph", variables={"assistant_id": "support"}, admin_otlp=False)
    assert graph.request_template().body_for("hi", 0, "u")["assistant_id"] == "support"


def test_an_unusable_template_is_refused_when_the_block_is_made() -> None:
    with pytest.raises(ValidationError, match=r"\{model\}"):
        AgentTarget(preset="openai")
    with pytest.raises(ValidationError, match=r"\{who\}"):
        AgentTarget(preset="nat-generate", body_template={"q": "{who}"})
    assert (
        AgentTarget(preset="openai", variables={"model": "m"}).request_template().body_for("x", 0, "u")["model"] == "m"
    )
