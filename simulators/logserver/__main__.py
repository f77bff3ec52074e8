"""``python -m simulators.logserver --config configs/local.yaml [--port N]``."""

from __future__ import annotations

from simulators.common import serve_part
from simulators.logserver.server import create_app


def main(argv: list[str] | None = None) -> None:
    """Start the log server on the configured host and port (the stack launcher runs this)."""
    serve_part("logserver", create_app, argv)


if __name__ == "__main__":
    main()
