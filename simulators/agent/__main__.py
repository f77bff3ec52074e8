"""``python -m simulators.agent --config FILE [--port N]``: serve the demo agent (simulated)."""

from __future__ import annotations

from simulators.common import part_argument_parser, run_app
from simulators.settings import load_local_config


def main(argv: list[str] | None = None) -> None:
    """Start the agent on ``ports.agent`` (or ``--port``); it talks to the NIM and the log server of the config."""
    from simulators.agent.server import create_app

    args = part_argument_parser("agent").parse_args(argv)
    cfg = load_local_config(args.config)
    if args.port is not None:
        cfg.ports.agent = args.port
    run_app(create_app(cfg), cfg.host, cfg.ports.agent, "agent")


if __name__ == "__main__":
    main()
