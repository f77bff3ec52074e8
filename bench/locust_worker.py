"""Locust, driven as a library, sending a Poisson schedule to the zero-latency endpoint.

Runs only in an interpreter where ``locust`` is installed (the optional ``bench`` extra, or any
virtualenv given with ``--locust-python``); it imports nothing from the project, so it works in a
virtualenv that holds locust alone. Called through :func:`bench.measure.run_isolated`.

Locust has no open-loop mode: its users are a closed loop. The fixed-rate test people write with it is
pacing: users that wait until the next planned send. Here ``users`` greenlets share one precomputed
Poisson schedule (the same one our generator uses for the same seed): each takes the next planned send
time, sleeps until it, sends, and records how late it went out. That is the load our generator offers,
so "sent late" means the same for both. ``FastHttpUser`` (geventhttpclient) is locust's fastest client.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from typing import Any


def run_level(
    url: str, rate: float, count: int, warmup: int, users: int, late_threshold_s: float, seed: int
) -> dict[str, Any]:
    """Offer ``warmup + count`` Poisson arrivals at ``rate``; statistics over the last ``count``."""
    import gevent
    from gevent.event import Event
    from locust import FastHttpUser, constant, task
    from locust.env import Environment

    logging.getLogger("locust").setLevel(logging.ERROR)
    rng = random.Random(seed)
    schedule = list(itertools.accumulate(rng.expovariate(rate) for _ in range(warmup + count)))
    state: dict[str, Any] = {"next": 0, "late": 0, "lateness": [], "latency": [], "errors": 0, "done": 0}
    origin = time.perf_counter() + 1.0  # users are spawned within this second
    finished = Event()
    cpu_marks: dict[str, float] = {}

    class Paced(FastHttpUser):
        host = url
        wait_time = constant(0)

        @task
        def send(self) -> None:
            i = state["next"]
            if i >= len(schedule):
                gevent.sleep(0.05)
                return
            state["next"] = i + 1
            intended = origin + schedule[i]
            delay = intended - time.perf_counter()
            if delay > 0:
                gevent.sleep(delay)
            if i == warmup:
                cpu_marks["start"], cpu_marks["wall_start"] = time.process_time(), time.perf_counter()
            sent = time.perf_counter()
            with self.client.get("/", catch_response=True) as response:
                ok = response.status_code == 200
                response.success() if ok else response.failure(f"status {response.status_code}")
            if i >= warmup:
                lateness = sent - intended
                state["lateness"].append(lateness)
                state["latency"].append(time.perf_counter() - sent)
                state["late"] += lateness > late_threshold_s
                state["errors"] += not ok
                state["done"] += 1
                if state["done"] == count:
                    cpu_marks["end"], cpu_marks["wall_end"] = time.process_time(), time.perf_counter()
                    finished.set()

    env = Environment(user_classes=[Paced])
    runner = env.create_local_runner()
    runner.start(users, spawn_rate=users * 20)
    finished.wait(timeout=schedule[-1] + 60)
    runner.quit()
    lateness, latency = sorted(state["lateness"]), sorted(state["latency"])
    done = state["done"]
    cpu = cpu_marks.get("end", time.process_time()) - cpu_marks.get("start", 0.0)
    wall = cpu_marks.get("wall_end", time.perf_counter()) - cpu_marks.get("wall_start", origin)
    return {
        "tool": f"locust {__import__('locust').__version__} (FastHttpUser, {users} users)",
        "rate": rate,
        "requests": done,
        "late_share": state["late"] / done if done else 1.0,
        "lateness_p99_s": lateness[int(0.99 * (len(lateness) - 1))] if lateness else None,
        "latency_p50_s": latency[len(latency) // 2] if latency else None,
        "throughput_rps": done / wall if wall > 0 else 0.0,
        "cpu_per_request_s": cpu / done if done else None,
        "cpu_share": cpu / wall if wall > 0 else None,
        "errors": state["errors"],
    }
