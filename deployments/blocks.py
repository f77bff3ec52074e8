"""Register block types and save block documents on the Prefect server (``flywheel blocks register``, ``deploy``)."""

from __future__ import annotations

from collections.abc import Iterable

from prefect.blocks.core import Block

from blocks.mlflow_tracking import MlflowTracking
from blocks.resolve import BlockNotFoundError, load_block


def save_blocks(documents: Iterable[Block], name: str) -> list[str]:
    """Register each document's block type with the Prefect API and save the document as ``name``
    (replacing one of that name); returns ``slug/name`` of each."""
    saved = []
    for document in documents:
        document.register_type_and_schema()
        document.save(name, overwrite=True)
        saved.append(f"{document.get_block_type_slug()}/{name}")
    return saved


def point_mlflow_links(name: str, ui_url: str) -> bool:
    """Make the saved ``MlflowTracking`` block ``name`` link to the MLflow UI at ``ui_url``; True when changed.

    Why: ``flywheel server up --mlflow-port`` moves the UI, and every MLflow link the flows write (logs,
    artifacts, report images, the ``mlflow_url`` of outcomes) comes from the block's ``ui_url``. A block
    that was never saved is left to ``flywheel blocks register``, which reads the same port.
    """
    try:
        block = load_block(MlflowTracking, name)
    except BlockNotFoundError:
        return False
    if block.ui_url == ui_url:
        return False
    block.ui_url = ui_url
    block.save(name, overwrite=True)
    return True
