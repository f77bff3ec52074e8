"""The one error handler of the ``flywheel`` command line: a failure the user can fix is one line, not a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

from agent_flywheel.config import ConfigError
from agent_flywheel.logstore.errors import LogStoreError
from agent_flywheel.processes import ServiceError
from deployments.settings import DeployError
from simulators.processes import StackError
from simulators.settings import SettingsError

P = ParamSpec("P")
R = TypeVar("R")


class CliError(Exception):
    """A failure the user can fix; printed as one line."""


FIXABLE: tuple[type[Exception], ...] = (
    CliError,
    ConfigError,
    ServiceError,
    DeployError,
    SettingsError,  # a bad local stack config
    StackError,  # a simulator that would not start (a busy port...)
    FileNotFoundError,
    LogStoreError,  # a log index the flywheel cannot read (the message says how to fix it), an unreadable watermark file
)


def user_can_fix(exc: Exception) -> bool:
    """Whether ``exc`` is one of the failures a user can fix (a bad config, a busy port, a missing block...).

    A missing block (``blocks.resolve.BlockNotFoundError``) is looked up among the loaded modules rather
    than imported: it imports Prefect, which this module must not do before the command has set
    ``PREFECT_HOME``; and it can only have been raised once that module was loaded.
    """
    if isinstance(exc, FIXABLE):
        return True
    resolve = sys.modules.get("blocks.resolve")
    if resolve is not None and isinstance(exc, resolve.BlockNotFoundError):
        return True
    preflight = sys.modules.get("agent_flywheel.preflight")  # what a run needs is missing, each problem with its fix
    return preflight is not None and isinstance(exc, preflight.PreflightError)


def one_line_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can fix into ``error: ...`` on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            if not user_can_fix(exc):
                raise
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper
