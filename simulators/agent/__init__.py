"""The demo customer-support agent of the local stack (simulated) and its synthetic traffic.

``server.create_app`` is the service (``python -m simulators.agent``); the traffic generator is
importable without the web stack: ``from simulators.agent import run_traffic, synthetic_messages``.
"""

from simulators.agent.traffic import TrafficReport, run_traffic, send_traffic, synthetic_messages

__all__ = ["TrafficReport", "run_traffic", "send_traffic", "synthetic_messages"]
