"""``python -m simulators.nemo --config configs/local.yaml [--port N]``: serve the NeMo simulator."""

from __future__ import annotations

from simulators.common import part_argument_parser, run_app
from simulators.nemo.server import create_app
from simulators.settings import load_local_config


def main(argv: list[str] | None = None) -> None:
    """Start the simulator on ``ports.nemo`` (or ``--port``) until interrupted."""
    args = part_argument_parser("nemo").parse_args(argv)
    cfg = load_local_config(args.config)
    run_app(create_app(cfg), cfg.host, args.port or cfg.ports.nemo, "nemo")


if __name__ == "__main__":
    main()
