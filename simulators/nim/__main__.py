"""``python -m simulators.nim --config configs/local.yaml [--port N]``: serve the NIM simulator."""

from __future__ import annotations

from simulators.common import serve_part
from simulators.nim.server import create_app


def main(argv: list[str] | None = None) -> None:
    """Parse the common part command line and serve until interrupted."""
    serve_part("nim", create_app, argv)


if __name__ == "__main__":
    main()
