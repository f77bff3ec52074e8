"""``python -m simulators.logserver --config configs/local.yaml [--port N]``."""

from __future__ import annotations

from simulators.common import part_argument_parser, run_app
from simulators.logserver.server import create_app
from simulators.settings import load_local_config


def main(argv: list[str] | None = None) -> None:
    """Start the log server on the configured host and port (the stack launcher runs this)."""
    args = part_argument_parser("logserver").parse_args(argv)
    cfg = load_local_config(args.config)
    run_app(create_app(cfg), cfg.host, args.port or cfg.ports.logserver, "logserver")


if __name__ == "__main__":
    main()
