"""The example inputs the scaling lifecycle sends: profile, load sweep and rollout traffic all use the same ones."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent_flywheel.config import ProfileConfig

# The demo agent's customer-support questions: the inputs when no file is given.
DEFAULT_INPUTS: tuple[str, ...] = (
    "Where is my order ORD-1001?",
    "Can I return the headphones from order ORD-1002?",
    "Do you have a waterproof hiking jacket?",
    "What is the status of my refund for ORD-1003?",
    "Hi! How are you today?",
)

Input = str | dict[str, Any]


def read_inputs(path: str | Path) -> tuple[list[Input], list[str]]:
    """The example inputs of a JSONL file: a line is a JSON string (a user message, put into the agent's request
    template) or an object (a whole request body, sent as it is).

    Bad lines are skipped and returned as problems with their line number; no usable line is an error.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the inputs: {exc.strerror or exc}") from None
    inputs: list[Input] = []
    problems: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{lineno}: not JSON ({exc.msg}); skipped")
            continue
        if (isinstance(item, str) and item.strip()) or (isinstance(item, dict) and item):
            inputs.append(item)
        else:
            problems.append(f"{path}:{lineno}: expected a message string or a request object; skipped")
    if not inputs:
        raise ValueError(f"{path}: no usable input (of {len(lines)} lines; {len(problems)} bad)")
    return inputs, problems


def load_inputs(cfg: ProfileConfig) -> tuple[list[Input], list[str]]:
    """The inputs of ``cfg.inputs_file`` (see :func:`read_inputs`), or the built-in demo messages without one."""
    if not cfg.inputs_file:
        return list(DEFAULT_INPUTS), []
    return read_inputs(cfg.inputs_file)


def request_body(inputs: Sequence[Input | Mapping[str, Any]], i: int, user_prefix: str) -> dict[str, Any]:
    """The demo agent's body for request ``i``: the inputs in turn; a message, or a chat body without a user,
    gets ``<prefix>-<i>`` (one user each, so a canary router spreads the requests over both variants)."""
    item = inputs[i % len(inputs)]
    body = {"message": item} if isinstance(item, str) else dict(item)
    if "message" in body and "user_id" not in body:
        body["user_id"] = f"{user_prefix}-{i}"
    return body
