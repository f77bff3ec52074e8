"""Register our block types and save the local-stack documents (``flywheel blocks register``)."""

from __future__ import annotations

from blocks.resolve import LOCAL, local_defaults
from simulators.settings import LocalStackConfig


def register_blocks(cfg: LocalStackConfig | None = None, name: str = LOCAL) -> list[str]:
    """Register every block type with the Prefect API and save a document per type pointing at the local stack."""
    saved = []
    for block_type, document in local_defaults(cfg).items():
        block_type.register_type_and_schema()
        document.save(name, overwrite=True)
        saved.append(f"{block_type.get_block_type_slug()}/{name}")
    return saved
