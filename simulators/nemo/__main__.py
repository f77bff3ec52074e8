"""``python -m simulators.nemo --config configs/local.yaml [--port N]``: serve the NeMo simulator."""

from __future__ import annotations

from simulators.common import serve_part
from simulators.nemo.server import create_app


def main(argv: list[str] | None = None) -> None:
    """Start the simulator on ``ports.nemo`` (or ``--port``) until interrupted."""
    serve_part("nemo", create_app, argv)


if __name__ == "__main__":
    main()
