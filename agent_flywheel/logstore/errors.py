"""The log store's own error."""

from __future__ import annotations


class LogStoreError(RuntimeError):
    """The log store cannot do what was asked (missing index, unreadable watermark file ...)."""
