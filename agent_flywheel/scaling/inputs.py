"""The example inputs the scaling lifecycle sends: profile, load sweep and rollout traffic all use the same ones."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent_flywheel.config import ProfileConfig
from agent_flywheel.scaling.loadgen.requests import DEFAULT_CHAT_MESSAGES


def load_inputs(cfg: ProfileConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """The example inputs: request bodies from ``inputs_file`` (JSONL) or the built-in demo messages.

    A line may be a JSON string (the message) or an object (the request body, e.g. ``{"message": ...}``).
    Bad lines are skipped and returned as problems with their line number; no usable line is an error.
    """
    if not cfg.inputs_file:
        return [{"message": m} for m in DEFAULT_CHAT_MESSAGES], []
    path = Path(cfg.inputs_file)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the profile inputs: {exc.strerror or exc}") from None
    inputs: list[dict[str, Any]] = []
    problems: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{lineno}: not JSON ({exc.msg}); skipped")
            continue
        if isinstance(item, str) and item.strip():
            inputs.append({"message": item})
        elif isinstance(item, dict) and item:
            inputs.append(item)
        else:
            problems.append(f"{path}:{lineno}: expected a message string or a request object; skipped")
    if not inputs:
        raise ValueError(f"{path}: no usable input (of {len(lines)} lines; {len(problems)} bad)")
    return inputs, problems


def request_body(inputs: Sequence[Mapping[str, Any]], i: int, user_prefix: str) -> dict[str, Any]:
    """Body of request ``i``: the inputs in turn; a chat input without a user gets ``<prefix>-<i>`` (one user each)."""
    body = dict(inputs[i % len(inputs)])
    if "message" in body and "user_id" not in body:
        body["user_id"] = f"{user_prefix}-{i}"
    return body
