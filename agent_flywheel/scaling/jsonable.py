"""Plain JSON from numbers and tables: what MLflow, Prefect and ``json.dumps`` all accept."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


def json_safe(value: Any) -> Any:
    """Non-finite floats become None and numpy scalars plain numbers, recursively: MLflow, Prefect and JSON agree."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def frame_rows(frame: pd.DataFrame, digits: int = 4) -> list[dict[str, Any]]:
    """A DataFrame as JSON-safe rows, floats rounded (for Prefect table artifacts and flow results)."""
    rows = []
    for record in frame.to_dict(orient="records"):
        row = {}
        for key, value in json_safe(record).items():
            row[key] = round(value, digits) if isinstance(value, float) else value
        rows.append(row)
    return rows
