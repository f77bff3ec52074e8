"""Shared fixtures: every test gets its own state directory, so nothing touches the project's .flywheel/.

The product side of the local stack's fixtures lives here too: the simulators' plugin starts stacks and
knows nothing of the product, so saving the ``local`` blocks that point the flows at a stack is done by
:func:`local_stack` and :func:`start_local_stack`.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from simulators.settings import LocalStackConfig
from tests.support.prefect_server import SessionPrefectServer
from tools.leftovers import MARK_VARIABLE, ancestors, kill, new_mark, report, wait_until_gone

# The local stack as fixtures (``running_stack``, ``start_stack``): the simulators' own pytest plugin.
pytest_plugins = ["simulators.pytest_plugin"]

# Property tests are judged on what they find, never on how fast an example ran: the machine may be busy.
settings.register_profile("flywheel", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("flywheel")

_SERVER = pytest.StashKey[SessionPrefectServer]()
_HOME = pytest.StashKey[Path]()

# Tests here never need a Prefect server (the core, the simulators and tools/ import no Prefect layer that talks to one):
# a session of only these starts none, and Prefect refuses to start a temporary one.
WITHOUT_PREFECT_SERVER = ("tests/core", "tests/simulators", "tests/tools")


# The modules that take longest (minutes, mostly waiting on servers), longest first. They run first, so that with
# pytest-xdist (``make test``: ``--dist loadfile --no-loadscope-reorder``) no worker starts one of them when the
# others are nearly done. A module missing here only makes the run less even, never wrong.
SLOWEST_FIRST = (
    "tests/prefect/test_operations_cli.py",
    "tests/prefect/test_operations.py",
    "tests/e2e/test_reliability.py",
    "tests/e2e/test_flywheel_flow.py",
    "tests/e2e/test_shared_deployments.py",
    "tests/e2e/test_foreign_agent.py",
    "tests/e2e/test_foreign_producers.py",
    "tests/prefect/test_scaling_flows.py",
)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _needs_prefect_server(config: pytest.Config) -> bool:
    """Whether any test the command line names lies outside :data:`WITHOUT_PREFECT_SERVER`."""
    pure = [config.rootpath / part for part in WITHOUT_PREFECT_SERVER]
    for arg in config.args:
        path = (config.invocation_params.dir / arg.split("::")[0]).resolve()
        if not any(path == root or root in path.parents for root in pure):
            return True
    return False


def _is_xdist_worker(config: pytest.Config) -> bool:
    """A pytest-xdist worker (``-n N``): a process that runs some of the session's tests for the controller."""
    return hasattr(config, "workerinput")


def _is_xdist_controller(config: pytest.Config) -> bool:
    """The pytest-xdist controller: it runs no test itself, it hands them to its workers."""
    return not _is_xdist_worker(config) and bool(getattr(config.option, "numprocesses", None))


def pytest_configure(config: pytest.Config) -> None:
    """The session's Prefect server starts here, before anything imports Prefect's settings (they are read
    once per process), and before collection, which it overlaps; every process of the session reaches it
    through ``PREFECT_API_URL`` (``tests/support/prefect_server.py`` says why not Prefect's temporary one).

    Every process the session starts carries ``FLYWHEEL_SESSION_MARK``, so that the end of the session can
    tell whether one of them is still running (:func:`pytest_sessionfinish`).

    With pytest-xdist (``-n N``) each worker is a session of its own here, with its own Prefect server: the
    product saves its blocks, work pool, deployments and concurrency limits under fixed names (the ``local``
    blocks, ``gpu``, one limit per workload), so workers sharing one server would point each other's flows at
    their own stacks. The controller starts no server (it runs no test); its workers inherit its mark, and
    it alone checks for leftover processes at the end, once every worker is done.
    """
    if config.option.help or config.option.version:
        return
    os.environ[MARK_VARIABLE] = os.environ.get(MARK_VARIABLE) or new_mark()
    home = config.stash[_HOME] = Path(tempfile.mkdtemp(prefix="flywheel-tests-prefect-"))
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    os.environ.pop("PREFECT_API_URL", None)
    # Nothing touches the project's .flywheel/ (``make`` exports these): state goes to temporary directories
    # (each test gets a FLYWHEEL_HOME of its own; see _isolated_flywheel_home), MLflow to FLYWHEEL_HOME.
    os.environ["FLYWHEEL_HOME"] = str(home / "flywheel")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    # Run state (watermarks, cooldowns) lives on the session's Prefect server: each FLYWHEEL_HOME its own.
    os.environ["FLYWHEEL_STATE_PREFIX"] = "@home"
    if config.option.collectonly or not _needs_prefect_server(config):
        os.environ["PREFECT_SERVER_EPHEMERAL_ENABLED"] = "false"  # a test that wants a server fails, and says so
    elif _is_xdist_controller(config):
        pass  # each worker starts the server of its own session (above)
    else:
        server = config.stash[_SERVER] = SessionPrefectServer.start(home)
        os.environ["PREFECT_API_URL"] = server.api
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:  # a killed run still stops what it started
        signal.signal(signal.SIGTERM, _interrupt)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The modules of :data:`SLOWEST_FIRST` first, in that order; the rest as collected (a stable sort)."""
    rank = {path: index for index, path in enumerate(SLOWEST_FIRST)}

    def module_rank(item: pytest.Item) -> int:
        return rank.get(item.nodeid.split("::")[0], len(SLOWEST_FIRST))

    items.sort(key=module_rank)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """The first test waits for the session's Prefect server, for as long as a busy machine needs."""
    server = session.config.stash.get(_SERVER, None)
    if server is None:
        return
    try:
        server.wait_healthy()
    except RuntimeError as exc:
        pytest.exit(str(exc), returncode=pytest.ExitCode.INTERNAL_ERROR)


@pytest.fixture(scope="session")
def prefect_server(pytestconfig: pytest.Config) -> SessionPrefectServer:
    """The session's Prefect server (its scheduler on): its API URL, home, log and environment."""
    if _SERVER not in pytestconfig.stash:
        pytest.fail(f"no Prefect server in a session of only {' and '.join(WITHOUT_PREFECT_SERVER)}")
    return pytestconfig.stash[_SERVER]


def _own_helpers() -> set[int]:
    """Helpers of pytest's own interpreter, which end with it rather than with a test: multiprocessing's resource
    tracker, started by the first ``spawn`` of a process (the load generator's processes) and kept for the session."""
    from multiprocessing import resource_tracker

    pid = getattr(resource_tracker._resource_tracker, "_pid", None)
    return {pid} if isinstance(pid, int) else set()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the session's Prefect server, then fail the run if any process it started still runs: one that
    carries the session's mark, or whose parent chain leads to pytest.

    Prefect's home (the server's database and log) is removed after a run that passed, kept after one that failed.
    """
    config = session.config
    if _HOME not in config.stash:
        return
    if _SERVER in config.stash:
        config.stash[_SERVER].stop()
    if _is_xdist_worker(config):  # its siblings carry the mark too: the controller checks, once they are done
        if session.exitstatus == pytest.ExitCode.OK:
            shutil.rmtree(config.stash[_HOME], ignore_errors=True)
        return
    mark, me = os.environ[MARK_VARIABLE], os.getpid()
    ours = ancestors(me) | _own_helpers()
    leftovers = wait_until_gone(mark, exclude=ours, below=me)
    if leftovers:
        message = report(leftovers, "the test session")
        still = kill(leftovers, mark, exclude=ours, below=me)
        if still:
            message += f"\ncould not kill: {', '.join(str(p.pid) for p in still)}"
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("")  # ends the progress line
            reporter.write_sep("=", "processes left running", red=True)
            reporter.write_line(message)
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if session.exitstatus == pytest.ExitCode.OK:
        shutil.rmtree(config.stash[_HOME], ignore_errors=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Also when the session ended early (a usage error, Ctrl-C before the tests ran)."""
    if _SERVER in config.stash:
        config.stash[_SERVER].stop()


@pytest.fixture(autouse=True)
def _isolated_flywheel_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("flywheel-home")
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    yield home


SaveLocalBlocks = Callable[[LocalStackConfig], LocalStackConfig]


def _save_local_blocks(stack: LocalStackConfig) -> LocalStackConfig:
    from cli.local_blocks import register_local_blocks  # imports Prefect: only once pytest_configure ran

    register_local_blocks(stack)
    return stack


@pytest.fixture(scope="session")
def save_local_blocks() -> SaveLocalBlocks:
    """Saves the ``local`` blocks pointing at a stack in this session's Prefect server, replacing earlier
    ones (as ``flywheel blocks register`` does), and returns the stack: for tests with a stack of their own."""
    return _save_local_blocks


@pytest.fixture(scope="module")
def local_stack(running_stack: LocalStackConfig, save_local_blocks: SaveLocalBlocks) -> LocalStackConfig:
    """The plugin's ``running_stack``, with the ``local`` blocks pointing at it."""
    return save_local_blocks(running_stack)


@pytest.fixture(scope="module")
def start_local_stack(
    start_stack: Callable[..., LocalStackConfig], save_local_blocks: SaveLocalBlocks
) -> Callable[..., LocalStackConfig]:
    """The plugin's ``start_stack``; the ``local`` blocks point at the stack it started last."""

    def start(*args: Any, **kwargs: Any) -> LocalStackConfig:
        return save_local_blocks(start_stack(*args, **kwargs))

    return start
