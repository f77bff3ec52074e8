"""The ``local`` block documents: every block pointing at the local stack of simulators (``flywheel blocks register``).

They live in the shell layer because they are made from the simulators' settings: the blocks, the
tasks and the flows know nothing of the simulators, and a block that was not saved is an error, never
these defaults.
"""

from __future__ import annotations

from prefect.blocks.core import Block

from blocks.agent_target import AgentTarget
from blocks.log_store import LogStore
from blocks.mlflow_tracking import MlflowTracking
from blocks.nemo_platform import NemoPlatform
from blocks.resolve import LOCAL
from deployments.blocks import save_blocks
from deployments.settings import current_server_config
from simulators.settings import LocalStackConfig


def local_blocks(cfg: LocalStackConfig, mlflow_ui_url: str | None = None) -> list[Block]:
    """One document per block type pointing at the stack ``cfg`` describes (each one labelled simulated).

    The MLflow links go to ``mlflow_ui_url``, by default the MLflow UI of the running ``flywheel server up``
    or, when none runs, the one ``configs/server.yaml`` describes.
    """
    nemo = cfg.url("nemo")
    return [
        NemoPlatform(
            entity_store_url=nemo,
            customizer_url=nemo,
            evaluator_url=nemo,
            deployment_url=nemo,
            datastore_url=cfg.url("datastore"),
            nim_url=cfg.url("nim"),
            simulated=True,
        ),
        LogStore(url=cfg.url("logserver"), index=str(cfg.agent.get("log_index", "flywheel")), simulated=True),
        MlflowTracking(ui_url=mlflow_ui_url or current_server_config().mlflow_url),
        AgentTarget(url=cfg.url("agent"), simulated=True),
    ]


def register_local_blocks(cfg: LocalStackConfig, name: str = LOCAL, mlflow_ui_url: str | None = None) -> list[str]:
    """Save the documents of :func:`local_blocks` as ``name`` (replacing what was saved under it)."""
    return save_blocks(local_blocks(cfg, mlflow_ui_url), name)
