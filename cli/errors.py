"""The one error handler of the ``flywheel`` command line: every failure is one line on stderr, never a traceback.

- A failure the user can fix (a bad config, a busy port, a missing block, a service that does not answer or
  answers ``4xx``, a flywheel run that could not decide...): ``error: <message>``, exit code 2.
- Anything else: ``error: <type>: <message>``, exit code 1.
- Ctrl-C: ``interrupted ...``, exit code 130.

Each line names ``.flywheel/logs/cli.log``, where the traceback goes. :func:`install` puts the handler on
every command of a Typer app, so no command can forget it.
"""

from __future__ import annotations

import datetime
import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import click
import httpx
import typer

from agent_flywheel.config import ConfigError
from agent_flywheel.logstore.errors import LogStoreError
from agent_flywheel.nemo.http import NemoAPIError
from agent_flywheel.nemo.poller import JobWaitError
from agent_flywheel.paths import state_dir
from agent_flywheel.processes import ServiceError
from agent_flywheel.transient import causes, http_status
from deployments.settings import DeployError
from simulators.processes import StackError
from simulators.settings import SettingsError

P = ParamSpec("P")
R = TypeVar("R")

EXIT_FIXABLE = 2
EXIT_UNEXPECTED = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
LOG_NAME = "cli.log"
_HANDLED = "__flywheel_one_line_errors__"


class CliError(Exception):
    """A failure the user can fix; printed as one line."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what was done about it (e.g. which flow runs were cancelled)."""


FIXABLE: tuple[type[BaseException], ...] = (
    CliError,
    ConfigError,
    ServiceError,
    DeployError,
    SettingsError,  # a bad local stack config
    StackError,  # a simulator that would not start (a busy port...)
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    NemoAPIError,  # names the service, the call, the status and what to do
    JobWaitError,  # a NeMo job that failed, stalled or timed out, with its last status
    LogStoreError,  # a log index the flywheel cannot read (the message says how to fix it), an unreadable watermark file
    httpx.TransportError,  # a service that does not answer: not running, or the wrong URL
    ConnectionError,
)
# Errors of modules that import Prefect (which must not be imported before the command set PREFECT_HOME) or
# are slow to import: looked up among the loaded modules, since they can only have been raised once their
# module was loaded.
FIXABLE_ELSEWHERE = {
    "agent_flywheel.datasets.build": ("InsufficientRecordsError",),  # too few records to learn from (0, say)
    "blocks.resolve": ("BlockNotFoundError",),
    "agent_flywheel.preflight": ("PreflightError",),  # what a run needs is missing, each problem with its fix
    "flows.flywheel": ("FlywheelRunError",),
    "tasks.nemo_jobs": ("FlywheelStepError",),
    "elastic_transport": ("ConnectionError", "ConnectionTimeout"),
}


def user_can_fix(exc: BaseException) -> bool:
    """Whether ``exc``, or what it was raised from, is a failure a user can fix.

    Besides the known errors: any HTTP answer ``4xx`` but ``429`` (a wrong URL, a bad key, a missing thing).
    """
    for error in causes(exc):
        if isinstance(error, FIXABLE) or _loaded_fixable(error):
            return True
        status = http_status(error)
        if status is not None and 400 <= status < 500 and status != 429:
            return True
    return False


def _loaded_fixable(exc: BaseException) -> bool:
    for module_name, names in FIXABLE_ELSEWHERE.items():
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for name in names:
            kind = getattr(module, name, None)
            if isinstance(kind, type) and isinstance(exc, kind):
                return True
    return False


def cli_log() -> Path:
    """``.flywheel/logs/cli.log``: where each failure's traceback goes."""
    return state_dir("logs") / LOG_NAME


def log_failure(exc: BaseException) -> str:
    """Append the traceback of ``exc`` to the CLI log; returns the log's path as the user should read it
    (relative to the working directory when inside it), or a note when it could not be written."""
    try:
        path = cli_log()
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        with path.open("a", encoding="utf-8") as log:
            log.write(f"\n=== {stamp} {' '.join(sys.argv)}\n")
            log.write("".join(traceback.format_exception(exc)))
    except OSError as error:
        return f"no log: {error.strerror or error}"
    try:
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


def message_of(exc: BaseException, where: str) -> str:
    """``error: ...`` for ``exc``: its message, its type too when unexpected, and where the traceback is.

    A message of several lines (a failure report listing each failed step) keeps its lines, indented
    under the first.
    """
    text = str(exc).strip() or type(exc).__name__
    if not user_can_fix(exc):
        text = f"{type(exc).__name__}: {text}"
    first, _, rest = text.partition("\n")
    line = f"error: {first} (traceback in {where})"
    if rest:
        line += "\n" + "\n".join(f"  {part}" for part in rest.splitlines())
    return line


def deliver_prefect_pending(timeout_s: float = 30.0) -> None:
    """Send the events and logs Prefect still holds, now: at interpreter exit Prefect would print "Still
    processing items" after the command's last line, or retry for minutes when its server is gone."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (EventsWorker, APILogWorker):
        progress = logging.getLogger(service.__name__)  # "Still processing items: ..." while it drains
        level = progress.level
        progress.setLevel(logging.ERROR)
        try:
            service.drain_all(timeout=timeout_s)
        except Exception:  # best effort: the command's outcome is already decided
            pass
        finally:
            progress.setLevel(level)


def one_line_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn every failure of a command into one line on stderr (exit 2 when the user can fix it, 1 when not,
    130 on Ctrl-C); the traceback goes to the CLI log. Applying it twice is harmless."""
    if getattr(func, _HANDLED, False):
        return func

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = func(*args, **kwargs)
        except (typer.Exit, click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            deliver_prefect_pending()
            raise  # typer/click's own way out: their message and exit code stand
        except KeyboardInterrupt as exc:
            deliver_prefect_pending(timeout_s=10.0)
            where = log_failure(exc)
            detail = str(exc).strip() if isinstance(exc, Interrupted) else ""
            typer.echo(f"interrupted (Ctrl-C){': ' + detail if detail else ''} (details in {where})", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            deliver_prefect_pending()
            where = log_failure(exc)
            typer.echo(message_of(exc, where), err=True)
            raise typer.Exit(EXIT_FIXABLE if user_can_fix(exc) else EXIT_UNEXPECTED) from None
        deliver_prefect_pending()
        return result

    setattr(wrapper, _HANDLED, True)
    return wrapper


def install(app: typer.Typer) -> typer.Typer:
    """Put :func:`one_line_errors` on every command and callback of ``app`` and of the apps added to it."""
    for command in app.registered_commands:
        if command.callback is not None:
            command.callback = one_line_errors(command.callback)
    if app.registered_callback is not None and app.registered_callback.callback is not None:
        app.registered_callback.callback = one_line_errors(app.registered_callback.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            install(group.typer_instance)
    return app
