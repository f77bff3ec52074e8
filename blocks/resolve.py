"""Load a block by name, falling back to the local stack's defaults for the name ``local``.

A new user who has not run ``flywheel blocks register`` still gets a working flywheel against the
local stack; any other name must exist on the Prefect server.
"""

from __future__ import annotations

import os
from typing import TypeVar

from prefect.blocks.core import Block

from blocks.agent_target import AgentTarget
from blocks.log_store import LogStore
from blocks.mlflow_tracking import MlflowTracking
from blocks.nemo_platform import NemoPlatform
from simulators.settings import LocalStackConfig, load_local_config

LOCAL = "local"
BlockT = TypeVar("BlockT", bound=Block)


def local_defaults(cfg: LocalStackConfig | None = None) -> dict[type[Block], Block]:
    """The block documents that point at the local stack (every one labelled simulated)."""
    cfg = cfg or load_local_config()
    nemo = cfg.url("nemo")
    return {
        NemoPlatform: NemoPlatform(
            entity_store_url=nemo,
            customizer_url=nemo,
            evaluator_url=nemo,
            deployment_url=nemo,
            datastore_url=cfg.url("datastore"),
            nim_url=cfg.url("nim"),
            simulated=True,
        ),
        LogStore: LogStore(url=cfg.url("logserver"), index=str(cfg.agent.get("log_index", "flywheel")), simulated=True),
        MlflowTracking: MlflowTracking(),
        AgentTarget: AgentTarget(url=cfg.url("agent"), simulated=True),
    }


def load_block(block_type: type[BlockT], name: str = LOCAL) -> BlockT:
    """The saved block ``name``; for ``local``, the local-stack default when none was saved.

    Without a Prefect server (``PREFECT_API_URL`` unset) ``local`` resolves straight to the defaults, so
    the CLI does not start Prefect's temporary server just to read them.
    """
    if name == LOCAL and not os.environ.get("PREFECT_API_URL"):
        return _local_default(block_type)
    try:
        return block_type.load(name, _sync=True)  # type: ignore[call-arg,return-value]
    except ValueError:
        if name != LOCAL:
            raise ValueError(
                f"no {block_type.get_block_type_slug()} block named {name!r}; run `flywheel blocks register` "
                "or create it in the Prefect UI"
            ) from None
        return _local_default(block_type)


def _local_default(block_type: type[BlockT]) -> BlockT:
    default = local_defaults()[block_type]
    assert isinstance(default, block_type)
    return default
