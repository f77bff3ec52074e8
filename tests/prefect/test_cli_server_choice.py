"""Where the CLI's in-process flow runs are recorded: decided before anything imports Prefect.

Prefect reads ``PREFECT_API_URL`` once, when its settings are first imported; a command module that imports
Prefect at load time makes ``prefect_server()`` point the runs at a server Prefect never asks, and every
``flywheel run`` starts a temporary server of its own (seen as runs missing from ``flywheel server up``'s UI
and a Ctrl-C that could not close them).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_loading_the_command_line_imports_no_prefect() -> None:
    probe = "import sys, cli.main; print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]", loaded.stdout
