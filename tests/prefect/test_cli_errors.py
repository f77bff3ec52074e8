"""The CLI's one error handler: one line per failure, the traceback in the CLI log, exit codes 2, 1 and 130."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from agent_flywheel.config import ConfigError
from cli.errors import Interrupted, install, message_of, user_can_fix

REQUEST = httpx.Request("GET", "http://service.test/v1/things")


def _app(error: BaseException) -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    group = typer.Typer()

    @app.command("fail")
    def fail() -> None:
        raise error

    @app.command("exit")
    def leave() -> None:
        raise typer.Exit(3)

    @group.command("nested")
    def nested() -> None:
        raise error

    app.add_typer(group, name="group")
    return install(app)


@pytest.fixture
def cli_log() -> Path:
    return Path(os.environ["FLYWHEEL_HOME"]) / "logs" / "cli.log"  # each test has a home of its own


def _invoke(error: BaseException, *args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(_app(error), list(args) or ["fail"])
    return result.exit_code, [line for line in result.stderr.splitlines() if line.strip()]


def test_a_failure_the_user_can_fix_is_one_line_and_exit_code_2(cli_log: Path) -> None:
    code, lines = _invoke(ConfigError("configs/flywheel.yaml: nims.0.model_name: field required"))
    assert code == 2
    assert lines == [f"error: configs/flywheel.yaml: nims.0.model_name: field required (traceback in {cli_log})"]
    assert "Traceback (most recent call last)" in cli_log.read_text()
    assert "ConfigError" in cli_log.read_text()


def test_an_unexpected_failure_names_its_type_and_exits_1(cli_log: Path) -> None:
    code, lines = _invoke(RuntimeError("boom"), "group", "nested")  # sub-apps get the handler too
    assert code == 1
    assert lines == [f"error: RuntimeError: boom (traceback in {cli_log})"]


def test_ctrl_c_is_one_line_and_exit_code_130(cli_log: Path) -> None:
    code, lines = _invoke(KeyboardInterrupt())
    assert code == 130 and len(lines) == 1 and lines[0].startswith("interrupted (Ctrl-C) (details in"), lines
    code, lines = _invoke(Interrupted("1 flow run(s) and 2 subflow run(s) ended Crashed"))
    assert code == 130
    assert lines[0].startswith("interrupted (Ctrl-C): 1 flow run(s) and 2 subflow run(s) ended Crashed"), lines


def test_typer_exits_pass_through(cli_log: Path) -> None:
    code, lines = _invoke(RuntimeError("unused"), "exit")
    assert (code, lines) == (3, [])
    assert not cli_log.exists()


def test_an_answer_4xx_anywhere_in_the_chain_is_fixable() -> None:
    answered = httpx.HTTPStatusError("404", request=REQUEST, response=httpx.Response(404, request=REQUEST))
    try:
        raise RuntimeError("the task's own words") from answered
    except RuntimeError as wrapped:
        assert user_can_fix(wrapped)
    busy = httpx.HTTPStatusError("503", request=REQUEST, response=httpx.Response(503, request=REQUEST))
    assert not user_can_fix(busy)  # the service failed: not the user's to fix
    assert user_can_fix(httpx.ConnectError("refused", request=REQUEST))  # not running, or the wrong URL
    assert not user_can_fix(KeyError("x"))


def test_a_report_of_several_lines_keeps_them_under_the_error_line() -> None:
    report = "flywheel w/c: 1 of 3 evaluations did not finish:\n- base-eval of m: timeout\nThe run is in MLflow."
    text = message_of(ConfigError(report), "cli.log")
    assert text.splitlines() == [
        "error: flywheel w/c: 1 of 3 evaluations did not finish: (traceback in cli.log)",
        "  - base-eval of m: timeout",
        "  The run is in MLflow.",
    ]


def test_every_flywheel_command_has_the_handler() -> None:
    from cli.main import app
    from cli.operations import operations_app

    def commands(typer_app: typer.Typer) -> Iterator[tuple[str, object]]:
        for command in typer_app.registered_commands:
            yield str(command.name or getattr(command.callback, "__name__", "?")), command.callback
        for group in typer_app.registered_groups:
            assert group.typer_instance is not None
            yield from commands(group.typer_instance)

    found = dict(commands(app)) | dict(commands(operations_app))
    for expected in ("run", "demo", "traffic", "import", "calc", "analyze", "scale-demo", "deploy", "up", "status"):
        assert expected in found, sorted(found)
    unhandled = [name for name, callback in found.items() if not getattr(callback, "__flywheel_one_line_errors__", 0)]
    assert unhandled == []
