"""What the terminal shows of Prefect's logs while a command runs flows in process: one line per event.

Prefect's console handler prints the traceback of every failed task and flow run, hundreds of lines for one
error the command then reports in one line. Here the console keeps each record's message (which names the
exception) and the tracebacks go to ``.flywheel/logs/cli.log``, next to the command's own; the flow runs'
logs in Prefect keep them too.
"""

from __future__ import annotations

import logging

from cli.errors import cli_log

_MARK = "_flywheel_console"


class _WithoutTraceback(logging.Formatter):
    """Formats as ``inner`` does, leaving out the traceback and stack of the record."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


class _CliLogHandler(logging.Handler):
    """Appends each record, traceback included, to the CLI log of the current state directory."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            with cli_log().open("a", encoding="utf-8") as log:
                log.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def tracebacks_to_log() -> None:
    """Prefect's console handlers print no traceback; errors with their tracebacks go to the CLI log.

    Call it once Prefect is imported (its import sets logging up); calling it again changes nothing.
    """
    import prefect  # noqa: F401  (sets logging up, once)
    from prefect.logging.handlers import PrefectConsoleHandler

    root = logging.getLogger()
    if getattr(root, _MARK, False):
        return
    for handler in root.handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.setFormatter(_WithoutTraceback(handler.formatter or logging.Formatter()))
    log_file = _CliLogHandler(logging.ERROR)
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(log_file)
    setattr(root, _MARK, True)
