"""The agent application under test by the scaling lifecycle, as a Prefect block that builds its clients."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from agent_flywheel.scaling.loadgen.generator import GeneratorSetup
from agent_flywheel.scaling.loadgen.requests import template_sender
from agent_flywheel.scaling.loadgen.template import PRESETS, RequestTemplate, TemplateError, build_template

PresetName = Literal["demo", "nat-generate", "nat-workflow", "nat-chat", "nat-openai", "openai", "langgraph"]


class AgentTarget(Block):
    """An HTTP agent endpoint, described by a request template (a preset, or your own) and where its answer is.

    Nothing else is asked of the agent: requests carry a W3C ``traceparent`` and its spans (OTLP, to the run's
    receiver or a traces file) are matched by trace id. ``admin_otlp`` (default: the preset's; only the demo
    agent's is true) lets a run point the agent's exporter at its receiver through the demo agent's
    ``POST /admin/otlp``. The clients it builds are the one place its ``api_key`` is read.
    """

    _block_type_name: ClassVar[str] = "Agent Target"
    _block_type_slug: ClassVar[str] = "agent-target"
    _description: ClassVar[str] = "HTTP endpoint of an agent application, for profiling, load sweeps and rollouts."

    app: str = Field(default="demo-agent", description="Application name (MLflow experiments sizing/<app>)")
    url: str = Field(default="http://127.0.0.1:18003", description="Agent base URL")
    preset: PresetName = Field(default="demo", description="The agent server's request and answer shape")
    path: str | None = Field(default=None, description="Path that takes one user turn (default: the preset's)")
    method: str | None = Field(default=None, description="HTTP method (default: the preset's, POST)")
    body_template: dict[str, Any] | list[Any] | None = Field(
        default=None, description="JSON body with {input}, {user_id}, {session_id}, {index} and variables"
    )
    answer_path: str | None = Field(
        default=None, description="Where the answer is in the JSON reply, e.g. choices.0.message.content"
    )
    trace_id_path: str | None = Field(
        default=None, description="Where the reply names the agent's own trace id, if it starts its own traces"
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers (not credentials)")
    variables: dict[str, str] = Field(
        default_factory=dict, description="Values of the template's other placeholders, e.g. model, assistant_id"
    )
    admin_otlp: bool | None = Field(
        default=None, description="The agent offers POST /admin/otlp (the demo agent); default: the preset's"
    )
    api_key: SecretStr | None = None
    simulated: bool = False

    @model_validator(mode="after")
    def _template_is_usable(self) -> AgentTarget:
        self.request_template()
        return self

    def request_template(self) -> RequestTemplate:
        """The request that takes one user turn, and where the answer is."""
        try:
            return build_template(
                self.preset,
                path=self.path,
                method=self.method,
                body=self.body_template,
                answer_path=self.answer_path,
                trace_id_path=self.trace_id_path,
                headers=self.headers,
                variables=self.variables,
            )
        except TemplateError as exc:
            raise ValueError(f"agent target: {exc}") from None

    @property
    def uses_admin_otlp(self) -> bool:
        """Whether a run may point the agent's exporter at its receiver through ``/admin/otlp``."""
        return PRESETS[self.preset].admin_otlp if self.admin_otlp is None else self.admin_otlp

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key.get_secret_value()}"} if self.api_key else {}

    def get_client(self, timeout_s: float = 10.0) -> httpx.Client:
        """A client for the agent (base URL and credentials set); use it as ``with``."""
        return httpx.Client(base_url=self.url, headers=self._auth_headers(), timeout=timeout_s)

    def get_async_client(self, timeout_s: float = 60.0, max_connections: int = 64) -> httpx.AsyncClient:
        """An async client for the agent, its pool sized for ``max_connections`` requests in flight."""
        return httpx.AsyncClient(
            base_url=self.url,
            headers=self._auth_headers(),
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=max_connections),
        )

    def load_generator(
        self, inputs: Sequence[str | Mapping[str, Any]], timeout_s: float = 60.0, user_prefix: str = "load-user"
    ) -> GeneratorSetup:
        """How a load generator (this process, or each of several) builds its requests and its client for the agent.

        Plain data, picklable: it is handed to generator processes. It holds the credentials, so it is never
        logged and never a Prefect parameter of a task that runs elsewhere (those load this block by name).
        """
        return GeneratorSetup(
            make_send=functools.partial(template_sender, self.request_template(), list(inputs), user_prefix),
            base_url=self.url,
            timeout_s=timeout_s,
            headers=self._auth_headers() or None,
        )
