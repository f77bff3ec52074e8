"""``flywheel otlp serve`` as a real process: standard exporters send to it, it appends OTLP JSON lines that a
reader can tail while they grow, and SIGTERM or SIGINT stops it cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from agent_flywheel.scaling.otlp.jsonl import FileTail
from agent_flywheel.scaling.profiling.files import load_traces
from simulators.threaded import free_port

pytestmark = pytest.mark.integration


def _serve(port: int, out: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "cli.main", "otlp", "serve", "--port", str(port), "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60  # a busy machine imports slowly
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"otlp serve exited early: {process.communicate()[1]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("otlp serve did not start listening")


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT])
def test_serve_writes_what_exporters_send_and_stops_cleanly(tmp_path: Path, stop_with: signal.Signals) -> None:
    port, out = free_port(), tmp_path / "spans.jsonl"
    process = _serve(port, out)
    try:
        tail = FileTail(out, from_start=True)
        provider = TracerProvider(resource=Resource.create({"service.name": "exporter-under-test"}))
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces"))
        )
        tracer = provider.get_tracer("tests.cli_otlp")
        with (
            tracer.start_as_current_span("agent"),
            tracer.start_as_current_span("llm", attributes={"openinference.span.kind": "LLM", "llm.model_name": "m"}),
        ):
            pass
        provider.shutdown()
        first = tail.read_new()  # a reader tailing the file sees whole documents as they are written
        assert len(first) == 2 and tail.problems == []
        refused = httpx.post(f"http://127.0.0.1:{port}/v1/traces", content=b"x", headers={"Content-Type": "text/plain"})
        assert refused.status_code == 415
    finally:
        process.send_signal(stop_with)
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, stderr
    assert "stopped: 2 documents (2 spans)" in stderr and "1 requests refused" in stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == first
    traces = load_traces(out).traces
    assert len(traces) == 1 and {s.kind for s in traces[0].spans} == {"llm", "span"}


def test_serve_refuses_a_port_in_use_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    first = _serve(port, tmp_path / "a.jsonl")
    try:
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "cli.main",
                "otlp",
                "serve",
                "--port",
                str(port),
                "--out",
                str(tmp_path / "b.jsonl"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert second.returncode == 2
    assert second.stderr.strip().splitlines()[-1].startswith(f"error: cannot listen on 127.0.0.1:{port}")
