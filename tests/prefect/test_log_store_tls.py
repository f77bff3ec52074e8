"""The LogStore block over TLS with a private CA: the log server serves HTTPS with a certificate our own CA
signed, and the block connects only when it carries that CA (as PEM text or a file), a pinned fingerprint, or,
where the server asks for one, a client certificate; otherwise the error says in one line what to set.

Nothing here relies on the process-wide ``SSL_CERT_FILE``: it is removed for these tests.
"""

from __future__ import annotations

import base64
import copy
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from pydantic import SecretStr

from agent_flywheel.logstore.client import LogStoreClient, TrustError
from agent_flywheel.logstore.elastic import ElasticsearchClient
from agent_flywheel.logstore.index import ensure_index
from agent_flywheel.logstore.reader import extract
from agent_flywheel.logstore.shape import inspect_index
from agent_flywheel.logstore.tls import TlsSettingError
from agent_flywheel.logstore.writer import bulk_index
from agent_flywheel.records.quarantine import QuarantineWriter
from agent_flywheel.records.schema import LogRecord
from agent_flywheel.records.validation import validate_record
from blocks.log_store import LogStore
from simulators.settings import LocalStackConfig
from simulators.threaded import ThreadedServer
from tests.support.blueprint_records import AIVA
from tests.support.tls_material import PrivateCA, private_ca

pytestmark = pytest.mark.integration

KINDS: tuple[Literal["elasticsearch"], Literal["opensearch"]] = ("elasticsearch", "opensearch")


@pytest.fixture(autouse=True)
def no_process_wide_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    return private_ca(tmp_path_factory.mktemp("private-ca"))


def _server(tmp_path_factory: pytest.TempPathFactory, ca: PrivateCA, *, mutual: bool) -> ThreadedServer:
    from simulators.logserver.server import create_app

    cfg = LocalStackConfig(state_dir=str(tmp_path_factory.mktemp("logserver-tls")))
    return ThreadedServer(
        create_app(cfg),
        ssl_certfile=str(ca.server.cert_file),
        ssl_keyfile=str(ca.server.key_file),
        ssl_ca_certs=str(ca.ca.cert_file) if mutual else None,
    )


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory, ca: PrivateCA) -> Iterator[str]:
    with _server(tmp_path_factory, ca, mutual=False) as server:
        assert server.url.startswith("https://")
        yield server.url


@pytest.fixture(scope="module")
def mutual(tmp_path_factory: pytest.TempPathFactory, ca: PrivateCA) -> Iterator[str]:
    with _server(tmp_path_factory, ca, mutual=True) as server:
        yield server.url


def _record(i: int) -> LogRecord:
    raw = copy.deepcopy(AIVA)
    raw["workload_id"], raw["client_id"] = "w", "c"
    raw["request"]["messages"][1]["content"] = f"Has bill {i} been processed?"
    result = validate_record(raw, source=f"test:{i}")
    assert isinstance(result, LogRecord)
    return result


def _round_trip(client: LogStoreClient, tmp_path: Path) -> int:
    """Create an index, write three records, read them back: how many came back."""
    index = f"tls-{uuid.uuid4().hex[:8]}"
    try:
        ensure_index(client, index)
        assert bulk_index(client, index, [_record(i) for i in range(3)]).indexed == 3
        client.refresh(index)
        with QuarantineWriter(tmp_path / "q.jsonl") as quarantine:
            return len(extract(client, index, workload_id="w", client_id="c", quarantine=quarantine).records)
    finally:
        client.close()


@pytest.mark.parametrize("kind", KINDS)
def test_the_block_connects_through_the_private_ca_it_carries(
    https: str, ca: PrivateCA, kind: Literal["elasticsearch", "opensearch"], tmp_path: Path
) -> None:
    assert _round_trip(LogStore(kind=kind, url=https, ca_certs=ca.ca.cert_pem).get_client(), tmp_path) == 3
    as_file = LogStore(kind=kind, url=https, ca_certs=str(ca.ca.cert_file))
    assert _round_trip(as_file.get_client(), tmp_path) == 3


@pytest.mark.parametrize("kind", KINDS)
def test_without_the_ca_the_error_names_the_ca_problem(
    https: str, ca: PrivateCA, kind: Literal["elasticsearch", "opensearch"]
) -> None:
    for store in (
        LogStore(kind=kind, url=https, request_timeout_s=60),
        LogStore(kind=kind, url=https, ca_certs=ca.stranger.cert_pem, request_timeout_s=60),  # another CA
    ):
        client = store.get_client()
        with pytest.raises(TrustError) as refused:
            inspect_index(client, "flywheel")
        client.close()
        message = str(refused.value)
        assert "\n" not in message and message.startswith(f"log store at {https}: TLS failed")
        assert "not signed by a CA this worker trusts" in message and "ca_certs" in message


@pytest.mark.parametrize("kind", KINDS)
def test_a_pinned_fingerprint_replaces_the_ca(
    https: str, ca: PrivateCA, kind: Literal["elasticsearch", "opensearch"], tmp_path: Path
) -> None:
    pinned = LogStore(kind=kind, url=https, ssl_assert_fingerprint=ca.server.sha256_fingerprint)
    assert _round_trip(pinned.get_client(), tmp_path) == 3
    wrong = LogStore(kind=kind, url=https, ssl_assert_fingerprint=ca.stranger.sha256_fingerprint).get_client()
    with pytest.raises(TrustError, match="not the pinned"):
        inspect_index(wrong, "flywheel")
    wrong.close()


@pytest.mark.parametrize("kind", KINDS)
def test_mutual_tls_with_the_client_certificate_from_the_block(
    mutual: str, ca: PrivateCA, kind: Literal["elasticsearch", "opensearch"], tmp_path: Path
) -> None:
    store = LogStore(
        kind=kind,
        url=mutual,
        ca_certs=ca.ca.cert_pem,
        client_cert=ca.client.cert_pem,
        client_key=ca.client.key_pem,  # type: ignore[arg-type]  # pydantic makes it a SecretStr
    )
    assert _round_trip(store.get_client(), tmp_path) == 3
    assert ca.client.key_pem not in repr(store) and "BEGIN PRIVATE KEY" not in repr(store)
    by_path = store.model_copy(update={"client_cert": str(ca.client.cert_file)})
    assert _round_trip(by_path.get_client(), tmp_path) == 3
    # without it the server hangs up (under TLS 1.3 the client learns no reason: a connection error)
    anonymous = LogStore(kind=kind, url=mutual, ca_certs=ca.ca.cert_pem, request_timeout_s=60).get_client()
    with pytest.raises(anonymous.failures):
        inspect_index(anonymous, "flywheel")
    anonymous.close()


def test_bad_tls_settings_are_one_line_errors(ca: PrivateCA) -> None:
    with pytest.raises(TlsSettingError, match="ca_certs: not a PEM CA certificate"):
        LogStore(url="https://logs.internal:9200", ca_certs="-----BEGIN CERTIFICATE-----\nnope\n").get_client()
    with pytest.raises(TlsSettingError, match="neither PEM text nor a readable file"):
        LogStore(url="https://logs.internal:9200", ca_certs="/no/such/ca.pem").get_client()
    with pytest.raises(TlsSettingError, match="not a matching PEM certificate and key"):
        LogStore(
            url="https://logs.internal:9200",
            client_cert=ca.client.cert_pem,
            client_key=ca.server.key_pem,  # type: ignore[arg-type]
        ).get_client()
    with pytest.raises(ValueError, match="not https"):
        LogStore(url="http://logs.internal:9200", ca_certs=ca.ca.cert_pem).get_client()


def test_cloud_id_reaches_the_elastic_cloud_deployment_over_tls_with_the_api_key(ca: PrivateCA) -> None:
    cloud_id = "flywheel-prod:" + base64.b64encode(b"eu-west-1.aws.found.io$es0123$kb4567").decode()
    store = LogStore(cloud_id=cloud_id, api_key=SecretStr("a2V5OnNlY3JldA=="), ca_certs=ca.ca.cert_pem)
    client = store.get_client()
    assert isinstance(client, ElasticsearchClient)
    nodes = [(node.config.scheme, node.config.host, node.config.port) for node in client.es.transport.node_pool.all()]
    assert nodes == [("https", "es0123.eu-west-1.aws.found.io", 443)]
    assert store.public_url() == "Elastic Cloud deployment 'flywheel-prod'" and "a2V5" not in client.where
    client.close()
    with pytest.raises(ValueError, match="cloud_id is Elastic Cloud's"):
        LogStore(kind="opensearch", cloud_id=cloud_id).get_client()
