"""The NeMo microservices a flywheel run talks to, as a Prefect block (the API key is a SecretStr)."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from agent_flywheel.config import FlywheelConfig, RemoteModelConfig
from agent_flywheel.endpoints import Role, remote_api_key
from agent_flywheel.nemo.client import NemoClient, NemoEndpoints
from agent_flywheel.nemo.http import RetryPolicy


class NemoPlatform(Block):
    """Where NeMo Entity Store, Customizer, Evaluator, Deployment Management, the Data Store and NIM live.

    The defaults are the ports of ``flywheel stack up`` (``flywheel blocks register`` saves a ``local``
    document pointing at the simulators); production points the same fields at the real services and
    nothing else changes.
    """

    _block_type_name: ClassVar[str] = "NeMo Platform"
    _block_type_slug: ClassVar[str] = "nemo-platform"
    _description: ClassVar[str] = "NeMo microservices (v1 API) and NIM endpoints used by the data flywheel."

    entity_store_url: str = Field(default="http://127.0.0.1:18000", description="NeMo Entity Store base URL")
    customizer_url: str = Field(default="http://127.0.0.1:18000", description="NeMo Customizer base URL")
    evaluator_url: str = Field(default="http://127.0.0.1:18000", description="NeMo Evaluator base URL")
    deployment_url: str = Field(default="http://127.0.0.1:18000", description="NeMo Deployment Management base URL")
    datastore_url: str = Field(
        default="http://127.0.0.1:18001", description="NeMo Data Store base URL (HF API at /v1/hf)"
    )
    nim_url: str = Field(default="http://127.0.0.1:18002", description="NIM proxy base URL (OpenAI-compatible)")
    api_key: SecretStr | None = Field(default=None, description="Bearer token for the NeMo services, if any")
    datastore_token: SecretStr | None = Field(default=None, description="Token for the Data Store's HF API")
    judge_api_key: SecretStr | None = Field(
        default=None,
        description=(
            "API key of a remote LLM judge (llm_judge_config.deployment_type remote); when unset: the variable "
            "llm_judge_config.api_key_env names, else LLM_JUDGE_API_KEY, then NVIDIA_API_KEY"
        ),
    )
    embedding_api_key: SecretStr | None = Field(
        default=None,
        description=(
            "API key of a remote embedding model (icl_config...embedding_nim_config, deployment_type remote); when "
            "unset: the variable its api_key_env names, else EMB_API_KEY, then NVIDIA_API_KEY"
        ),
    )
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    simulated: bool = Field(default=False, description="True when the URLs point at the local simulators")

    def endpoints(self) -> NemoEndpoints:
        """The base URL of each service (no secrets)."""
        return NemoEndpoints(
            entity_store=self.entity_store_url,
            customizer=self.customizer_url,
            evaluator=self.evaluator_url,
            deployment=self.deployment_url,
            datastore=self.datastore_url,
            nim=self.nim_url,
        )

    def remote_api_keys(self, config: FlywheelConfig) -> dict[str, SecretStr]:
        """The API keys of the remote judge and embedding model ``config`` uses, by role: this block's secret,
        else the environment as the blueprint reads it (:func:`agent_flywheel.endpoints.remote_api_key`).

        The one place they are read. Local models (deployed through DMS, served by NIM) need none.
        """
        models: list[tuple[Role, RemoteModelConfig | None, SecretStr | None]] = [
            ("judge", config.llm_judge_config, self.judge_api_key),
            ("embedding", config.icl_config.similarity_config.embedding_nim_config, self.embedding_api_key),
        ]
        keys: dict[str, SecretStr] = {}
        for role, model, secret in models:
            if model is not None and model.deployment_type == "remote":
                key = remote_api_key(role, secret, model.api_key_env)
                if key is not None:
                    keys[role] = key
        return keys

    def get_client(self, config: FlywheelConfig | None = None) -> NemoClient:
        """A client of every service here (``async with platform.get_client() as nemo:``); the one place
        the block's secrets go. With the run's ``config``, it also carries the API keys of its remote judge
        and embedding model (:meth:`remote_api_keys`)."""
        return NemoClient(
            self.endpoints(),
            api_key=self.api_key,
            datastore_token=self.datastore_token,
            timeout_s=self.timeout_s,
            retry=RetryPolicy(max_retries=self.max_retries),
            remote_keys=self.remote_api_keys(config) if config is not None else None,
        )
