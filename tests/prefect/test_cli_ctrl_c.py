"""Ctrl-C during an async flow ends the command as interrupted, even when a library absorbs the first cancellation,
and never cuts short the cleanup of a cancellation being handled."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from cli import in_process
from cli.in_process import run_async


@pytest.fixture(autouse=True)
def quick_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(in_process, "CANCEL_CHECK_S", 0.05)


def _ctrl_c_soon() -> None:
    asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGINT)


def test_a_cancellation_absorbed_once_is_requested_again_and_the_command_is_interrupted() -> None:
    seen: list[str] = []

    async def absorbs_the_first() -> str:
        _ctrl_c_soon()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("absorbed")
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()  # as a library between two states may, by accident
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("cancelled again")
            raise
        return "ran to its end"

    with pytest.raises(KeyboardInterrupt):
        run_async(absorbs_the_first())
    assert seen == ["absorbed", "cancelled again"]


def test_a_run_that_ends_normally_after_ctrl_c_still_ends_the_command_as_interrupted() -> None:
    async def finishes_anyway() -> str:
        _ctrl_c_soon()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()
        return "done"

    with pytest.raises(KeyboardInterrupt):
        run_async(finishes_anyway())


def test_cleanup_of_a_cancellation_being_handled_is_not_cut_short() -> None:
    steps: list[str] = []

    async def slow_cleanup() -> None:
        _ctrl_c_soon()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            for step in range(5):  # several re-check periods long
                await asyncio.sleep(0.05)
                steps.append(f"cleanup {step}")
            raise

    with pytest.raises(KeyboardInterrupt):
        run_async(slow_cleanup())
    assert steps == [f"cleanup {step}" for step in range(5)]


def test_without_ctrl_c_the_result_and_errors_pass_through() -> None:
    async def answer() -> int:
        return 42

    async def fails() -> None:
        raise ValueError("no")

    assert run_async(answer()) == 42
    with pytest.raises(ValueError, match="no"):
        run_async(fails())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
