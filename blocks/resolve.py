"""Load a saved block by name; a missing one is an error that says how to create it.

There is no fallback: a flow pointed at a block that does not exist must not quietly talk to
something else (the local simulators, say). ``flywheel blocks register`` saves the ``local``
documents that point at the local stack; real services get theirs in the Prefect UI or in Python.
"""

from __future__ import annotations

from typing import TypeVar

from prefect.blocks.core import Block

LOCAL = "local"
BlockT = TypeVar("BlockT", bound=Block)


class BlockNotFoundError(LookupError):
    """No block of this type with this name on the Prefect server; the message says how to create it."""


def load_block(block_type: type[BlockT], name: str) -> BlockT:
    """The saved block ``name`` of ``block_type``, or :class:`BlockNotFoundError` naming both."""
    try:
        return block_type.load(name, _sync=True)  # type: ignore[call-arg,return-value]
    except ValueError:
        raise BlockNotFoundError(_missing(block_type, name)) from None


def _missing(block_type: type[Block], name: str) -> str:
    return (
        f"no {block_type.get_block_type_slug()} block named {name!r} on the Prefect server; create it with "
        f"`flywheel blocks register` (the local stack), or for real services in the Prefect UI (Blocks, "
        f"{block_type.get_block_type_name()}) or in Python: {block_type.__name__}(...).save({name!r})"
    )
