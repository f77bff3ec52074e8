"""The Elasticsearch log store of agent traffic, as a Prefect block (credentials are SecretStr)."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

from elasticsearch import Elasticsearch
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from agent_flywheel.logstore.serializer import LogStoreSerializer
from agent_flywheel.transient import RETRY_STATUSES


class LogStore(Block):
    """Where the agent's OpenAI-format request/response records are logged."""

    _block_type_name: ClassVar[str] = "Flywheel Log Store"
    _block_type_slug: ClassVar[str] = "flywheel-log-store"
    _description: ClassVar[str] = "Elasticsearch index holding the agent's logged LLM calls."

    url: str = Field(default="http://127.0.0.1:19200", description="Elasticsearch URL")
    index: str = Field(default="flywheel", description="Index of the log records")
    username: str | None = None
    password: SecretStr | None = None
    api_key: SecretStr | None = Field(default=None, description="Elasticsearch API key (base64 id:key)")
    verify_certs: bool = True
    request_timeout_s: float = Field(default=30.0, gt=0)
    simulated: bool = Field(default=False, description="True when the URL points at the local log server")

    def get_client(self) -> Elasticsearch:
        """An official Elasticsearch client (decoding with orjson where that is exact); secrets are read here
        and nowhere else."""
        kwargs: dict[str, object] = {
            "serializer": LogStoreSerializer(),
            "request_timeout": self.request_timeout_s,
            "retry_on_timeout": True,
            "retry_on_status": sorted(RETRY_STATUSES),  # never a 4xx answer but 408/425/429
            "max_retries": 3,
        }
        if self.url.startswith("https"):
            kwargs["verify_certs"] = self.verify_certs
        if self.api_key is not None:
            kwargs["api_key"] = self.api_key.get_secret_value()
        elif self.username and self.password is not None:
            kwargs["basic_auth"] = (self.username, self.password.get_secret_value())
        return Elasticsearch(self.url, **kwargs)  # type: ignore[arg-type]

    def public_url(self) -> str:
        """The URL without any ``user:password@`` in it, for messages."""
        url = urlsplit(self.url)
        return url._replace(netloc=url.netloc.rpartition("@")[2]).geturl()

    def redact(self, text: str) -> str:
        """``text`` with this store's password and API key masked, for messages."""
        for secret in (self.password, self.api_key):
            if secret is not None and secret.get_secret_value():
                text = text.replace(secret.get_secret_value(), "***")
        return text
