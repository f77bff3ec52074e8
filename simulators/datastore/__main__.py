"""``python -m simulators.datastore --config configs/local.yaml [--port N]``: serve the Data Store."""

from __future__ import annotations

from simulators.common import part_argument_parser, run_app
from simulators.datastore.server import create_app
from simulators.settings import load_local_config


def main(argv: list[str] | None = None) -> None:
    """Parse the common part command line and serve until interrupted."""
    args = part_argument_parser("datastore").parse_args(argv)
    cfg = load_local_config(args.config)
    run_app(create_app(cfg), cfg.host, args.port or cfg.ports.datastore, "datastore")


if __name__ == "__main__":
    main()
