"""``python -m simulators.agent --config FILE [--port N]``: serve the demo agent (simulated)."""

from __future__ import annotations

from simulators.common import serve_part


def main(argv: list[str] | None = None) -> None:
    """Start the agent on ``ports.agent`` (or ``--port``); it talks to the NIM and the log server of the config."""
    from simulators.agent.server import create_app

    serve_part("agent", create_app, argv)


if __name__ == "__main__":
    main()
