"""The log store of agent traffic (Elasticsearch or OpenSearch), as a Prefect block (secrets are SecretStr)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from elasticsearch import Elasticsearch
from opensearchpy import OpenSearch
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from agent_flywheel.logstore.client import LogStoreClient
from agent_flywheel.logstore.elastic import ElasticsearchClient
from agent_flywheel.logstore.opensearch import OpenSearchClient
from agent_flywheel.logstore.serializer import LogStoreSerializer
from agent_flywheel.logstore.tls import ssl_context
from agent_flywheel.transient import RETRY_STATUSES


class LogStore(Block):
    """Where the agent's OpenAI-format request/response records are logged.

    TLS material is PEM text (so a pod needs no mounted file) or a path: ``ca_certs`` for a store whose
    certificate a private CA signed, ``client_cert``/``client_key`` for mutual TLS, or ``ssl_assert_fingerprint``
    to pin the store's certificate instead. ``cloud_id`` (with ``api_key``) reaches an Elastic Cloud deployment.
    """

    _block_type_name: ClassVar[str] = "Flywheel Log Store"
    _block_type_slug: ClassVar[str] = "flywheel-log-store"
    _description: ClassVar[str] = "Elasticsearch or OpenSearch index holding the agent's logged LLM calls."

    kind: Literal["elasticsearch", "opensearch"] = Field(
        default="elasticsearch", description="The search engine; each is reached with its official client"
    )
    url: str = Field(default="http://127.0.0.1:19200", description="Elasticsearch or OpenSearch URL")
    index: str = Field(default="flywheel", description="Index of the log records")
    username: str | None = None
    password: SecretStr | None = None
    api_key: SecretStr | None = Field(default=None, description="Elasticsearch API key (base64 id:key)")
    cloud_id: str | None = Field(default=None, description="Elastic Cloud deployment id (instead of url)")
    ca_certs: str | None = Field(
        default=None, description="CA certificate that signed the store's certificate: PEM text or a file path"
    )
    client_cert: str | None = Field(default=None, description="Client certificate for mutual TLS: PEM text or path")
    client_key: SecretStr | None = Field(default=None, description="Its private key: PEM text or path")
    ssl_assert_fingerprint: str | None = Field(
        default=None, description="SHA-256 fingerprint of the store's certificate, pinned instead of a CA check"
    )
    verify_certs: bool = True
    request_timeout_s: float = Field(default=30.0, gt=0)
    simulated: bool = Field(default=False, description="True when the URL points at the local log server")

    def get_client(self) -> LogStoreClient:
        """The log store's client (the official Elasticsearch or OpenSearch one behind the flywheel's interface);
        secrets are read here and nowhere else."""
        if self.kind == "opensearch":
            return OpenSearchClient(self._opensearch(), self.public_url())
        return ElasticsearchClient(self._elasticsearch(), self.public_url())

    def _tls(self) -> dict[str, Any]:
        """The TLS context (and pinned fingerprint) for an ``https`` store; nothing for plain HTTP."""
        if not (self.cloud_id or self.url.startswith("https")):
            if self.ca_certs or self.client_cert or self.ssl_assert_fingerprint:
                raise ValueError(f"LogStore: TLS settings are set but the url {self.public_url()} is not https")
            return {}
        key = self.client_key.get_secret_value() if self.client_key is not None else None
        context = ssl_context(
            ca_certs=self.ca_certs,
            client_cert=self.client_cert,
            client_key=key,
            verify_certs=self.verify_certs,
            pinned=self.ssl_assert_fingerprint is not None,
        )
        tls: dict[str, Any] = {"ssl_context": context}
        if self.ssl_assert_fingerprint:
            tls["ssl_assert_fingerprint"] = self.ssl_assert_fingerprint
        return tls

    def _elasticsearch(self) -> Elasticsearch:
        kwargs: dict[str, Any] = {
            "serializer": LogStoreSerializer(),
            "request_timeout": self.request_timeout_s,
            "retry_on_timeout": True,
            "retry_on_status": sorted(RETRY_STATUSES),  # never a 4xx answer but 408/425/429
            "max_retries": 3,
            **self._tls(),
        }
        if self.api_key is not None:
            kwargs["api_key"] = self.api_key.get_secret_value()
        elif self.username and self.password is not None:
            kwargs["basic_auth"] = (self.username, self.password.get_secret_value())
        if self.cloud_id:
            return Elasticsearch(cloud_id=self.cloud_id, **kwargs)
        return Elasticsearch(self.url, **kwargs)

    def _opensearch(self) -> OpenSearch:
        if self.cloud_id:
            raise ValueError("LogStore: cloud_id is Elastic Cloud's; an OpenSearch store takes its url")
        if self.api_key is not None:
            raise ValueError("LogStore: api_key is Elasticsearch's; OpenSearch takes username and password")
        tls = self._tls()
        kwargs: dict[str, Any] = {
            "timeout": self.request_timeout_s,
            "retry_on_timeout": True,
            "retry_on_status": tuple(sorted(RETRY_STATUSES)),  # never a 4xx answer but 408/425/429
            "max_retries": 3,
            "use_ssl": bool(tls),
            **tls,
        }
        if self.username and self.password is not None:
            kwargs["http_auth"] = (self.username, self.password.get_secret_value())
        return OpenSearch(hosts=[self.url], **kwargs)

    def public_url(self) -> str:
        """The URL without any ``user:password@`` in it (or the Elastic Cloud deployment's name), for messages."""
        if self.cloud_id:
            return f"Elastic Cloud deployment {self.cloud_id.partition(':')[0]!r}"
        url = urlsplit(self.url)
        return url._replace(netloc=url.netloc.rpartition("@")[2]).geturl()

    def redact(self, text: str) -> str:
        """``text`` with this store's password, API key and client key masked, for messages."""
        for secret in (self.password, self.api_key, self.client_key):
            if secret is not None and secret.get_secret_value():
                text = text.replace(secret.get_secret_value(), "***")
        return text
