"""Remote OpenAI-compatible endpoints (a judge, an embedding model): their URLs and where their API key comes from.

One place normalises URLs, because configs write them both ways: ours as a base (``http://nim.test``), the
blueprint's as the full operation (``https://integrate.api.nvidia.com/v1/embeddings``,
``http://0.0.0.0:9022/v1/chat/completions``). Appending ``/v1/embeddings`` to the latter posted to
``.../v1/embeddings/v1/embeddings``.

API keys are secrets: they live in a Prefect block (a ``SecretStr`` field) and, like the blueprint, in the
environment when the block has none (``LLM_JUDGE_API_KEY`` or ``EMB_API_KEY``, then ``NVIDIA_API_KEY``, or
the variable a config's ``api_key_env`` names). Configs only ever name the variable, never hold the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import SecretStr

_OPERATIONS = ("/chat/completions", "/embeddings", "/completions")

Role = Literal["judge", "embedding"]

#: The environment variables the blueprint reads a remote model's key from, in order.
BLUEPRINT_KEY_VARIABLES: dict[str, tuple[str, ...]] = {
    "judge": ("LLM_JUDGE_API_KEY", "NVIDIA_API_KEY"),
    "embedding": ("EMB_API_KEY", "NVIDIA_API_KEY"),
}


def api_root(url: str) -> str:
    """The OpenAI API root of ``url`` (``.../v1``), whether ``url`` is a base, a root or a full operation URL.

    ``http://nim:8000`` → ``http://nim:8000/v1``; ``http://nim:8000/v1/`` → ``http://nim:8000/v1``;
    ``https://integrate.api.nvidia.com/v1/embeddings`` → ``https://integrate.api.nvidia.com/v1``; an operation
    URL under another root (``https://host/openai/deployments/d/chat/completions``) keeps that root.
    """
    text = url.strip().rstrip("/")
    for operation in _OPERATIONS:
        if text.endswith(operation):
            return text[: -len(operation)].rstrip("/")
    return text if text.endswith("/v1") else f"{text}/v1"


def chat_completions_url(url: str) -> str:
    """``<api root>/chat/completions`` (what NeMo Evaluator's ``api_endpoint.url`` wants)."""
    return f"{api_root(url)}/chat/completions"


def embeddings_url(url: str) -> str:
    """``<api root>/embeddings``."""
    return f"{api_root(url)}/embeddings"


def remote_api_key(
    role: Role,
    block_secret: SecretStr | None = None,
    api_key_env: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> SecretStr | None:
    """The API key for a remote judge or embedding model: the block's secret if set, else the environment.

    ``api_key_env`` (from the config) names the variable to read; without it, the blueprint's variables for
    ``role`` are tried in order. None when no key is found (an endpoint that needs none).
    """
    if block_secret is not None and block_secret.get_secret_value():
        return block_secret
    env = os.environ if environ is None else environ
    for name in (api_key_env,) if api_key_env else BLUEPRINT_KEY_VARIABLES[role]:
        value = env.get(name)
        if value:
            return SecretStr(value)
    return None
