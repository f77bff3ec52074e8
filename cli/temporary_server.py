"""Prefect's temporary server for the commands that run flows in this process (``flywheel run``, ``flywheel demo``).

Without ``PREFECT_API_URL`` Prefect starts a temporary API server in a subprocess on first use and stops it
at interpreter exit. Left to itself, on a busy machine it gives up after its start-up timeout and leaves
that process running, and every later call starts another. Here the command starts it once, waits
``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` (``configure_local_environment`` makes that
generous), reports a server that never answered in one line, and stops it however the command ends:
normally, on an error, on Ctrl-C or on SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from cli.errors import CliError


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While inside: SIGTERM unwinds the stack (so ``finally`` blocks run) instead of ending the process at once."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def temporary_prefect_server() -> Iterator[None]:
    """The configured Prefect server if there is one (nothing to start or stop), else Prefect's temporary
    server, started now and stopped when the block ends (blocks may nest: the outermost one owns it).
    Call after ``configure_local_environment()``."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the one Prefect's clients use in this process
    if server.running:  # started by an enclosing block, which stops it
        yield
        return
    timeout_s = PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
    with _sigterm_unwinds():
        try:
            try:
                server.start(timeout=timeout_s)
            except RuntimeError:
                raise CliError(
                    f"Prefect's temporary server did not answer within {timeout_s} s (a busy machine?): raise "
                    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or start a server with `flywheel server up` "
                    "and `source .flywheel/run/env.sh`"
                ) from None
            yield
        finally:
            server.stop()
