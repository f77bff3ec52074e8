"""One retry rule for every client: connection errors, timeouts, 408/425/429/5xx may pass; other answers do not."""

from __future__ import annotations

import elasticsearch
import httpx
import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from huggingface_hub.errors import HfHubHTTPError
from mlflow.exceptions import MlflowException, RestException

from agent_flywheel.config import ConfigError
from agent_flywheel.logstore.errors import LogStoreError
from agent_flywheel.nemo.http import NemoAPIError, RetryPolicy, hint_for
from agent_flywheel.transient import RETRY_STATUSES, http_status, is_transient

REQUEST = httpx.Request("POST", "http://service.test/v1/things")


def _httpx(status: int) -> httpx.HTTPStatusError:
    return httpx.HTTPStatusError("answered", request=REQUEST, response=httpx.Response(status, request=REQUEST))


def _es(status: int) -> elasticsearch.ApiError:
    meta = ApiResponseMeta(
        status=status, http_version="1.1", headers=HttpHeaders(), duration=0.0, node=NodeConfig("http", "es", 9200)
    )
    return elasticsearch.ApiError("answered", meta, {"error": "x"})


def _nemo(status: int | None) -> NemoAPIError:
    return NemoAPIError(service="customizer", method="GET", path="/v1/x", status=status, detail="d")


def _raised_from(cause: BaseException) -> RuntimeError:
    try:
        raise RuntimeError("the task's own message") from cause
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 410, 413, 415, 422])
def test_deterministic_answers_are_not_transient(status: int) -> None:
    for error in (_httpx(status), _es(status), _nemo(status), HfHubHTTPError("x", response=_httpx(status).response)):
        assert http_status(error) == status
        assert not is_transient(error), (type(error).__name__, status)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_timeouts_rate_limits_and_server_errors_are_transient(status: int) -> None:
    for error in (_httpx(status), _es(status), _nemo(status)):
        assert is_transient(error), (type(error).__name__, status)


def test_connection_errors_are_transient_and_decide_through_the_wrapping_error() -> None:
    assert is_transient(httpx.ConnectError("refused", request=REQUEST))
    assert is_transient(elasticsearch.ConnectionError("refused"))
    assert is_transient(ConnectionRefusedError())
    no_answer = _nemo(None)
    no_answer.__cause__ = httpx.ConnectError("refused", request=REQUEST)
    assert is_transient(no_answer)
    # a task's own error decides by what it was raised from
    assert not is_transient(_raised_from(_es(400)))
    assert is_transient(_raised_from(elasticsearch.ConnectionError("refused")))


def test_bad_input_is_not_transient_and_the_unknown_is() -> None:
    assert not is_transient(ConfigError("flywheel.yaml: nims: required"))
    assert not is_transient(ValueError("bad"))
    assert not is_transient(_raised_from(LogStoreError("log index 'flywheel' does not exist")))
    assert not is_transient(RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no run"}))
    assert is_transient(MlflowException("database is locked"))  # an internal error: 500
    assert is_transient(RuntimeError("who knows"))


def test_the_nemo_client_retries_what_the_rule_retries() -> None:
    assert RetryPolicy().retry_statuses == RETRY_STATUSES
    assert {408, 425, 429, 500, 599} <= RETRY_STATUSES
    assert not {400, 401, 403, 404, 409, 422} & RETRY_STATUSES


@pytest.mark.parametrize("status", [400, 405, 415, 422])
def test_the_hint_of_a_4xx_names_the_url_and_the_status(status: int) -> None:
    hint = hint_for(status, "customizer", "http://nim.test:8000")
    assert "http://nim.test:8000" in hint and str(status) in hint
    assert "SDK" not in hint and "version" not in hint
