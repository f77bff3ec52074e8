"""Register block types and save block documents on the Prefect server (``flywheel blocks register``, ``deploy``)."""

from __future__ import annotations

from collections.abc import Iterable

from prefect.blocks.core import Block


def save_blocks(documents: Iterable[Block], name: str) -> list[str]:
    """Register each document's block type with the Prefect API and save the document as ``name``
    (replacing one of that name); returns ``slug/name`` of each."""
    saved = []
    for document in documents:
        document.register_type_and_schema()
        document.save(name, overwrite=True)
        saved.append(f"{document.get_block_type_slug()}/{name}")
    return saved
