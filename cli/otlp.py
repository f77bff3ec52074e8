"""``flywheel otlp serve``: the OTLP/HTTP trace receiver as a long-lived service that writes what it receives.

Point any agent's exporter (``OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:PORT``, protobuf or JSON, gzip or not),
the NeMo Agent Toolkit's ``otelcollector`` exporter (``endpoint: http://HOST:PORT/v1/traces``) or a collector's
``otlphttp`` exporter at it; every export request becomes one OTLP JSON line of ``--out`` (appended, flushed per
document), which ``flywheel profile run --traces FILE`` and ``flywheel sweep run --traces FILE`` read while it
grows. SIGINT or SIGTERM stops it cleanly: the port is closed and the file flushed and closed.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from agent_flywheel.scaling.otlp.jsonl import JsonlSink
from agent_flywheel.scaling.otlp.receiver import OtlpReceiver

otlp_app = typer.Typer(
    help="OpenTelemetry traces: an OTLP/HTTP receiver that writes spans to a file.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@otlp_app.callback()
def _otlp_group() -> None:
    """OpenTelemetry traces: an OTLP/HTTP receiver that writes spans to a file."""


@otlp_app.command("serve")
def otlp_serve(
    out: Annotated[Path, typer.Option("--out", help="OTLP JSON lines file to append every received document to")],
    port: Annotated[int, typer.Option("--port", help="Port to listen on (4318: the OTLP/HTTP default)")] = 4318,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (0.0.0.0: reachable from other machines)")
    ] = "127.0.0.1",
) -> None:
    """Receive OTLP/HTTP traces on POST /v1/traces and append them to --out until SIGINT or SIGTERM."""
    try:
        sink = JsonlSink(out)
    except OSError as exc:
        typer.echo(f"error: cannot write {out}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from None
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            receiver = OtlpReceiver(host, port, sink=sink).start()
        except OSError as exc:
            typer.echo(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"receiving OTLP/HTTP traces at {receiver.traces_url}; writing {out} (Ctrl-C to stop)", err=True)
        try:
            while not stop.wait(0.5):
                pass
        finally:
            receiver.stop()
    finally:
        sink.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    typer.echo(
        f"stopped: {sink.received} documents ({sink.spans} spans) written to {out}, {sink.rejected} requests refused",
        err=True,
    )
