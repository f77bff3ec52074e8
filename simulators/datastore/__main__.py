"""``python -m simulators.datastore --config configs/local.yaml [--port N]``: serve the Data Store."""

from __future__ import annotations

from simulators.common import serve_part
from simulators.datastore.server import create_app


def main(argv: list[str] | None = None) -> None:
    """Parse the common part command line and serve until interrupted."""
    serve_part("datastore", create_app, argv)


if __name__ == "__main__":
    main()
