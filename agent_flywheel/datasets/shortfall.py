"""When filters leave too few records: what was filtered, why, how many, and the configuration line to change.

"0 usable records" alone sends a user hunting. The records may never have been read (a workload or client id
that matches nothing: NeMo Agent Toolkit logs under ``"<workflow>"``), read and quarantined, skipped because
another model answered them (``extraction.teacher_only`` with a teacher name that differs from the logged
one, e.g. ``meta/llama-3.1-70b-instruct`` against the default ``meta/llama-3.3-70b-instruct``), or removed by
the build (duplicates, answers without a tool call). This module turns the counts each step keeps into one
message that names them and the exact line to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent_flywheel.config import FlywheelConfig
from agent_flywheel.records.cache import NO_MODEL, ReadSummary


@dataclass(frozen=True)
class SourceFilters:
    """How the records were chosen before the build: the ids read and the model filter, for messages."""

    workload_id: str | None = None
    client_id: str | None = None
    teacher: str | None = None
    teacher_only: bool = False
    config_file: str = "configs/flywheel.yaml"

    @classmethod
    def from_config(
        cls, cfg: FlywheelConfig, workload_id: str, client_id: str, config_file: str | None = None
    ) -> SourceFilters:
        """The filters a flywheel run applies, from its configuration."""
        return cls(
            workload_id=workload_id,
            client_id=client_id,
            teacher=cfg.teacher.model_name,
            teacher_only=cfg.extraction.teacher_only,
            config_file=config_file or "configs/flywheel.yaml",
        )


def _ordered(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _reasons(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{count} {name}" for name, count in _ordered(counts))


def _models(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name}: {count}" for name, count in _ordered(counts))


def shortfall_report(
    headline: str,
    removed: Mapping[str, int],
    read: int,
    reads: ReadSummary | None,
    filters: SourceFilters | None,
    *,
    build_ran: bool = True,
) -> str:
    """The message for too few usable records: ``headline`` (the shortfall), each filter with its counts, and
    the configuration lines that would let more records through.

    ``removed`` are the build's removals by reason, ``read`` the records it read; ``reads`` what extraction
    saw (None when the records did not come from the record cache); ``filters`` the ids and model filter;
    ``build_ran`` false when extraction stopped the run before any build.
    """
    lines = [f"{headline}. What was filtered, and why:"]
    fixes: list[str] = []
    config = filters.config_file if filters else "the flywheel config"
    if reads is not None:
        if reads.windows and reads.scanned == 0:
            lines.append(
                f"- log store: no record of this workload and client was found in {reads.windows} read(s); check "
                "the workload and client ids the producer logs under (NeMo Agent Toolkit's default workload id is "
                "'<workflow>') and the LogStore block's index"
            )
        else:
            quarantined = sum(reads.quarantined.values())
            lines.append(
                f"- log store: {reads.scanned} records read in {reads.windows} read(s); "
                f"{quarantined} quarantined{f' ({_reasons(reads.quarantined)})' if quarantined else ''}; "
                f"{reads.duplicates} repeated a newer conversation"
            )
        skipped = sum(reads.skipped_models.values())
        if skipped:
            teacher = filters.teacher if filters else None
            lines.append(
                f"- teacher filter (extraction.teacher_only: true, teacher.model_name: {teacher}): {skipped} records "
                f"skipped as answered by another model. Models seen: {_models(reads.models)}"
            )
            named = [(m, c) for m, c in reads.skipped_models.most_common() if m != NO_MODEL]
            if named:
                fixes.append(f"teacher.model_name: {named[0][0]}")
            fixes.append("extraction.teacher_only: false")
    build_removed = sum(removed.values())
    if build_ran:
        lines.append(f"- dataset build: read {read}; removed {_reasons(removed) if build_removed else 'none'}")
    if removed.get("no_tool_call"):
        fixes.append("evaluation_config.include_no_call_records: true")
    if fixes:
        lines.append(
            f"To learn from the filtered records, change in {config}: " + " (or) ".join(f"`{fix}`" for fix in fixes)
        )
    return "\n".join(lines)
