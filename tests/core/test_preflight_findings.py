"""The preflight's findings: one line each, whatever a service answered; a remote endpoint's answer says what to
fix (the key or the url) and never shows the key."""

from __future__ import annotations

import asyncio

import httpx
from pydantic import SecretStr

from agent_flywheel.config import RemoteModelConfig
from agent_flywheel.preflight import Finding, PreflightError, PreflightReport, check_remote

KEY = "sk-preflight-canary-789"
JUDGE = RemoteModelConfig(model_name="judge/model", url="https://judge.test/v1")


def test_every_finding_is_one_line_and_the_error_lists_every_problem() -> None:
    report = PreflightReport(
        (
            Finding("Data Store", True, "accepts uploads"),
            Finding("teacher t", False, "not served\n  (it serves: none)", "deploy it"),
            Finding("log index", False, "index 'x'\ndoes not exist", "create it:\n flywheel logs create-index"),
        )
    )
    assert report.lines() == [
        "ok       Data Store: accepts uploads",
        "PROBLEM  teacher t: not served (it serves: none); fix: deploy it",
        "PROBLEM  log index: index 'x' does not exist; fix: create it: flywheel logs create-index",
    ]
    assert str(PreflightError(report)).splitlines()[1:] == [
        "- teacher t: not served (it serves: none); fix: deploy it",
        "- log index: index 'x' does not exist; fix: create it: flywheel logs create-index",
    ]
    assert str(PreflightError(report)).startswith("preflight: 2 problem(s)")


def _answering(status: int, body: str, seen: list[httpx.Request]) -> httpx.AsyncClient:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, text=body, headers={"content-type": "application/json"})

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


async def _check(status: int, body: str, key: SecretStr | None, seen: list[httpx.Request]) -> Finding:
    async with _answering(status, body, seen) as http:
        (finding,) = await check_remote("judge", JUDGE, key, http)
    return finding


def test_a_remote_judge_is_asked_with_its_key_and_a_refusal_names_where_the_key_goes() -> None:
    seen: list[httpx.Request] = []
    ok = asyncio.run(_check(200, '{"choices": [{"message": {"content": "OK"}}]}', SecretStr(KEY), seen))
    assert ok.ok and "with an API key" in ok.line()
    assert str(seen[0].url) == "https://judge.test/v1/chat/completions"
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"

    refused = asyncio.run(_check(401, '{"error": "unauthorized"}', None, seen))
    assert not refused.ok and "no API key was sent" in refused.detail
    assert "judge_api_key" in refused.fix and "LLM_JUDGE_API_KEY" in refused.fix
    wrong = asyncio.run(_check(403, '{"error": "forbidden"}', SecretStr(KEY), seen))
    assert "the API key was refused" in wrong.detail and KEY not in wrong.line()

    garbled = asyncio.run(_check(404, "<html>\n<body>not\nfound</body>\n</html>" + "x" * 500, SecretStr(KEY), seen))
    assert not garbled.ok and "\n" not in garbled.line() and len(garbled.line()) < 400
    assert "answered 404 without choices" in garbled.detail and "url and model_name" in garbled.fix
