"""``docs/benchmarks.md`` from a results dict (what ``python -m bench`` collected, also kept as JSON).

Why a separate writer: the document can be regenerated from saved results (``--report-only``), a partial
run (``--only``) merges into the previous results instead of wiping the other sections, and the smoke
test can check the writer on tiny inputs without running any benchmark. Every figure is printed next to
the method that produced it; a section whose benchmark did not run says so instead of disappearing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.measure import busy_machine_note, under_load

BUILD_RATIO_TARGET = 3.0
MEMORY_TARGET_MB = 1536.0


# --------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------


def _num(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value, spec) + suffix


def seconds(value: Any) -> str:
    """Seconds with a precision that suits the magnitude."""
    if value is None:
        return "—"
    if value < 0.1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"


def micros(value: Any) -> str:
    """A per-request cost or a latency: µs below a millisecond, then ms, then seconds."""
    if value is None:
        return "—"
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"


def rate(value: Any) -> str:
    """Records or requests per second, rounded to what the noise allows."""
    if value is None:
        return "—"
    return f"{value:,.0f}/s" if value >= 100 else f"{value:.1f}/s"


def mb(value: Any) -> str:
    """Megabytes, or gigabytes above 1 GB."""
    if value is None:
        return "—"
    return f"{value / 1024:.2f} GB" if value >= 1024 else f"{value:.0f} MB"


def count(value: Any) -> str:
    """An integer with thousands separators (10k, 100k, 1M as 10,000 ...)."""
    return "—" if value is None else f"{int(value):,}"


def _spread(pair: Sequence[float] | None) -> str:
    return "" if not pair or pair[0] == pair[1] else f" ({seconds(pair[0])}–{seconds(pair[1])})"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str | None = None) -> list[str]:
    marks = align or ("l" + "r" * (len(header) - 1))
    rule = ["---:" if a == "r" else ":---:" if a == "c" else "---" for a in marks]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("**met**" if ok else "**missed**")


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


def _runs(results: dict[str, Any], m: dict[str, Any]) -> list[list[str]]:
    """One row per invocation that contributed results (a full run, then any ``--only`` re-runs)."""
    history = results.get("history") or [
        {
            "mode": results.get("mode"),
            "benchmarks": ["all"],
            "date": m.get("date"),
            "seconds": results.get("total_seconds"),
        }
    ]
    cores = m.get("cores") or 0
    return [
        [
            "Runs" if i == 0 else "",
            f"{run.get('mode')} run of {', '.join(run.get('benchmarks') or [])}, {run.get('date')}: "
            f"{seconds(run.get('seconds'))}, highest 1-minute load average {_num(run.get('max_load'), '.1f')}"
            + (" — **under load**" if under_load(run.get("max_load"), cores) else ""),
        ]
        for i, run in enumerate(history)
    ]


def _machine(results: dict[str, Any]) -> list[str]:
    m = results.get("machine") or {}
    libs = ", ".join(f"{k} {v}" for k, v in (m.get("libraries") or {}).items())
    lines = ["## Machine", ""]
    lines += _table(
        ["", ""],
        [
            ["CPU", f"{m.get('cpu', '—')} ({m.get('cores', '—')} cores)"],
            ["Memory", _num(m.get("memory_gb"), ".1f", " GB")],
            ["OS / Python", f"{m.get('os', '—')} / {m.get('implementation', '')} {m.get('python', '—')}"],
            ["Libraries", libs or "—"],
            *_runs(results, m),
        ],
        "ll",
    )
    loads = [tuple(x) for x in results.get("loads", []) if x]
    note = busy_machine_note(loads, m.get("cores"))
    lines.append("")
    if note:
        lines.append(
            f"**Note: {note}** (other work shared the machine; the runs marked *under load* above). A section "
            "holds the results of the latest run that included it. Absolute times from a loaded run are "
            "pessimistic; the ratios are measured within one round, back to back, and are the figures to compare."
        )
    else:
        lines.append(
            "The machine was otherwise quiet while measuring (1-minute load average at most cores + 1: the "
            "benchmark's own client and server)."
        )
    return [*lines, ""]


def _build_rows(sizes: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for entry in sizes:
        build = entry.get("build")
        if not build:
            continue
        n = build["cache_records"]
        bound, std, ours = build["orjson_parse"], build["json_parse"], build["build_datasets"]
        cold = build.get("build_cold")
        ok = bool(ours["ok_runs"])
        rows.append(
            [
                count(entry["records"]),
                f"{count(n)} / {build['cache_bytes'] / 1e9:.2f} GB",
                f"{seconds(bound['seconds'])}{_spread(bound['seconds_spread'])}",
                seconds(std["seconds"]),
                (
                    f"{seconds(ours['seconds'])}{_spread(ours['seconds_spread'])}"
                    if ok
                    else f"failed: {ours['errors'][:1]}"
                ),
                rate(n / ours["seconds"]) if ok and ours["seconds"] else "—",
                f"**{_num(build['ratio_build_to_orjson'], '.1f', '×')}**",
                (
                    f"{seconds(cold['seconds'])} ({_num(build.get('ratio_cold_to_orjson'), '.1f', '×')})"
                    if cold and cold["ok_runs"]
                    else "—"
                ),
                _num(build["ratio_json_to_orjson"], ".1f", "×"),
                mb(ours["peak_rss_mb_max"]) if ok else mb(ours.get("killed_at_mb")),
                str(entry["rounds"]),
            ]
        )
    return rows


def _extraction(results: dict[str, Any] | None) -> list[str]:
    lines = ["## 1. Extraction and dataset build", ""]
    if not results:
        return [*lines, "_Not run in this invocation (`--only` excluded it)._", ""]
    sizes = results.get("sizes", [])
    lines += [
        "**Records.** Generated by `bench/data.py` in the blueprint's log format: `timestamp` (epoch seconds or ISO "
        "8601), `workload_id`, `client_id`, an OpenAI `request` (system prompt, 3–8 customer-support tools with JSON "
        "Schemas, multi-turn history with tool calls and tool results) and a `ChatCompletion` `response` whose tool "
        "call carries `arguments` as a JSON string (two thirds, OpenAI style) or an object (one third, AIVA style). "
        "Sizes are uniform in 2–8 KB (mean ≈ 5.5 KB). 10 % of records repeat an earlier conversation (duplicates) "
        "and 2 % are bad in six ways the log index still accepts (empty messages, no choices, unparseable arguments, "
        "unknown role, missing response, non-text content). A sample of every size is validated with the project's "
        "own `validate_record` to check that the record cache file holds exactly what extraction would write.",
        "",
        "**Dataset build** (the issue's target): `build_datasets` over the `RecordCache` — exactly the flow's "
        "`build-datasets` task — through shape checks, dedupe on the conversation hash, the seeded split, uniform "
        "ICL for one 8k-context model, and the NeMo dataset files plus manifest. `limit` is the number of records, "
        "so every usable record lands in a file. The cache keeps, beside each segment, a key file with what the "
        "build needs of every record (conversation hash, timestamp, label, answer flags, example length), computed "
        "once when extraction writes the record (`agent_flywheel/records/keys.py`); the build reads those columns, "
        "then parses and writes out each selected record. **Cold build**: the same with the key files deleted "
        "first, so the build computes every key itself (the first build after the key format changes; it saves "
        "them again). **Bound**: every line of the same file parsed with orjson (the fastest JSON parser "
        "installed), objects discarded as they are made; the standard library's `json` for comparison. Each "
        "round runs bound, `json` and build back to back (the first round also the cold build, before the "
        "build), each in a fresh process; the ratio is taken per round and the median reported. Peak memory is the build process's own high-water mark (`VmHWM`).",
        "",
    ]
    rows = _build_rows(sizes)
    if rows:
        lines += _table(
            [
                "records",
                "in the cache (lines / bytes)",
                "orjson parse",
                "json parse",
                "build_datasets",
                "build rate",
                "build ÷ orjson",
                "cold build (÷ orjson)",
                "json ÷ orjson",
                "build peak RSS",
                "rounds",
            ],
            rows,
        )
        lines.append("")
        largest = max((e for e in sizes if e.get("build")), key=lambda e: e["records"])
        ratio = largest["build"]["ratio_build_to_orjson"]
        peaks = [e["build"]["build_datasets"]["peak_rss_mb_max"] for e in sizes if e.get("build")]
        peak = max((p for p in peaks if p is not None), default=None)
        lines += [
            f"- Target 1, build of {count(largest['records'])} records in under {BUILD_RATIO_TARGET:g}× the orjson parse "
            f"of the same bytes: {_num(ratio, '.1f', '×')} — {_verdict(None if ratio is None else ratio < BUILD_RATIO_TARGET)}"
            f"{_cpu_note(largest['build'], ratio)}.",
            f"- Target 2, peak memory under {mb(MEMORY_TARGET_MB)} at every size: largest {mb(peak)} — "
            f"{_verdict(None if peak is None else peak < MEMORY_TARGET_MB)}. Peak memory by size: "
            + ", ".join(
                f"{count(e['records'])}: {mb(e['build']['build_datasets']['peak_rss_mb_max'])}"
                for e in sizes
                if e.get("build")
            )
            + f"; {_per_record_growth(sizes)} Per record the build keeps its key row (a hash, a timestamp, a "
            "label, flags, the example length and the line's offset: 62 bytes) plus sort temporaries during "
            "dedupe and split; records themselves stream through.",
            "",
        ]
    lines += _breakdown(results.get("breakdown"))
    lines += _end_to_end(sizes, results.get("memory_cap_mb"))
    return lines


def _cpu_note(build: dict[str, Any], ratio: float | None) -> str:
    """The same ratio in CPU time, and where the wall time went when they differ."""
    build_cpu, bound_cpu = build["build_datasets"].get("cpu_seconds"), build["orjson_parse"].get("cpu_seconds")
    if not build_cpu or not bound_cpu or ratio is None:
        return ""
    cpu_ratio = build_cpu / bound_cpu
    note = f" (in CPU time {cpu_ratio:.1f}×"
    written = (build["build_datasets"].get("last") or {}).get("output_bytes")
    if written and ratio > 1.1 * cpu_ratio:
        note += f"; the rest is the build waiting on the disk: it writes {written / 1e9:.1f} GB of dataset files"
    return note + ")"


def _per_record_growth(sizes: list[dict[str, Any]]) -> str:
    built = [e for e in sizes if e.get("build") and e["build"]["build_datasets"]["peak_rss_mb_max"]]
    if len(built) < 2:
        return ""
    a, b = built[0], built[-1]
    growth = (
        (b["build"]["build_datasets"]["peak_rss_mb_max"] - a["build"]["build_datasets"]["peak_rss_mb_max"])
        * 1024
        * 1024
    )
    per = growth / max(1, b["records"] - a["records"])
    return f"it grows by ≈ {per:.0f} bytes per record between the smallest and largest size."


def _breakdown(data: dict[str, Any] | None) -> list[str]:
    if not data or "steps_us" not in data:
        return []
    lines = [
        "### Where the build's time goes",
        "",
        f"Each step timed alone over the first {count(data['records'])} cache records, results thrown away as the "
        "streaming build does (`bench.extraction.breakdown`), against orjson parsing the same lines in the same "
        "process. The record keys are computed when the record cache is written (by extraction, which already "
        "holds the record); the steps marked *build* are what the build does per record it writes out. Lines "
        "marked *before* are what this benchmark's changes replaced.",
        "",
    ]
    lines += _table(
        ["step", "µs per record", "× orjson parse"],
        [
            [name, _num(us, ".1f"), _num(data["steps_x_bound"][name], ".2f", "×")]
            for name, us in data["steps_us"].items()
        ],
    )
    return [*lines, ""]


def _pipeline_cell(run: dict[str, Any], n: int, cap: float | None, with_time: bool = False) -> str:
    """One end-to-end pipeline over ``n`` records: (time,) rate and peak memory, or why there are none."""
    if not (run["ok_runs"] and run["seconds"]):
        return f"over the {mb(cap)} memory cap" if run.get("killed_at_mb") else "failed"
    speed, peak = rate(n / run["seconds"]), mb(run["peak_rss_mb_max"])
    return f"{seconds(run['seconds'])} ({speed}), {peak}" if with_time else f"{speed}, {peak}"


def _end_to_end(sizes: list[dict[str, Any]], cap: float | None) -> list[str]:
    rows = []
    for entry in sizes:
        e2e = entry.get("end_to_end")
        if not e2e:
            continue
        n = entry["records"]
        ours, naive, bound = e2e["ours"], e2e["naive"], e2e["orjson_parse_raw"]

        rows.append(
            [
                count(n),
                seconds(bound["seconds"]),
                _pipeline_cell(ours, n, cap, with_time=True),
                f"{seconds(e2e['ours_extract_seconds'])} / {seconds(e2e['ours_build_seconds'])}",
                mb(e2e["ours_extract_peak_rss_mb"]),
                _pipeline_cell(naive, n, cap, with_time=True),
                _num(e2e["ratio_ours_to_orjson"], ".0f", "×"),
                _num(e2e["ratio_naive_to_orjson"], ".0f", "×"),
                seconds(e2e["load"]["seconds"]),
            ]
        )
    if not rows:
        return []
    lines = [
        "### End to end from the log store: ours and the blueprint's naive pipeline",
        "",
        "The log server simulator (SQLite, its own process) is bulk-loaded with every raw record (setup, timed "
        "for information). **Ours**: `extract` (point in time + `search_after`, pages of 500, full validation "
        "into `LogRecord`s, quarantine, dedupe) reading the whole window, as the flow's `extract-logs` task does "
        "by default, each record streamed into the record cache (and its key file) as its page arrives, with "
        "the Elasticsearch client the `LogStore` block makes (orjson decoding where exact), then "
        "`build_datasets` as above. **Naive**: the blueprint's "
        "algorithm as `reference/blueprint-data-flywheel.md` §2.3–2.4 describes it, re-implemented in "
        "`bench/extraction.py`: a `match` query sorted by timestamp, `scroll` of 1,000 until 2 × limit hits, "
        "every hit kept in a list; its OpenAI-format checks, tool-call quality filter (string arguments parsed), "
        "dedupe in a Python loop on the tuple of user messages, `random.sample`, a stratified eval split, "
        "formatting, uniform ICL and `json.dumps` per line. The bound is orjson over the raw bytes in the store. "
        "Each measurement is a fresh process; one round at 100k and above.",
        "",
    ]
    lines += _table(
        [
            "records",
            "orjson parse",
            "ours: time (rate), peak RSS",
            "ours: extract / build",
            "ours: peak RSS after extract",
            "naive: time (rate), peak RSS",
            "ours ÷ orjson",
            "naive ÷ orjson",
            "bulk load",
        ],
        rows,
    )
    lines += ["", *(f"- {line}" for line in [*_correctness(sizes), *_growth(sizes, cap)])]
    return [*lines, ""]


def _correctness(sizes: list[dict[str, Any]]) -> list[str]:
    """What each pipeline put in the files, against the generator's known distinct valid conversations."""
    out = []
    for entry in sizes:
        e2e = entry.get("end_to_end")
        if not e2e or not e2e["ours"].get("last") or not e2e["naive"].get("last"):
            continue
        truth, bad = entry["data"]["distinct"], entry["data"]["bad"]
        ours, naive = e2e["ours"]["last"], e2e["naive"]["last"]
        kept = naive["deduplicated"]
        out.append(
            f"At {count(entry['records'])} records the generator made {count(truth)} distinct valid conversations and "
            f"{count(bad)} bad records. Ours selected {count(ours['counts']['selected'])} and quarantined "
            f"{count(ours['quarantined'])}; naive kept {count(kept)}: about {count(max(0, kept - truth))} invalid records "
            "(unknown role, non-text content) passed its checks into the dataset files, and its dedupe key (user "
            "messages only) differs from the conversation hash."
        )
    return out


def _growth(sizes: list[dict[str, Any]], cap: float | None) -> list[str]:
    """Memory per record of both end-to-end pipelines, and what the sizes they did not finish would need."""
    runs = [e for e in sizes if e.get("end_to_end")]
    # per pipeline: (slope in MB per record, the largest size it finished) between its smallest and largest
    growth: dict[str, tuple[float, dict[str, Any], str]] = {}
    for name in ("ours", "naive"):
        done = [e for e in runs if e["end_to_end"][name]["ok_runs"] and e["end_to_end"][name]["peak_rss_mb_max"]]
        if len(done) >= 2 and done[-1]["records"] > done[0]["records"]:
            a, b = done[0], done[-1]
            slope = (b["end_to_end"][name]["peak_rss_mb_max"] - a["end_to_end"][name]["peak_rss_mb_max"]) / (
                b["records"] - a["records"]
            )
            growth[name] = (slope, b, f"{count(a['records'])}–{count(b['records'])}")
    if not growth:
        return []

    def projected(name: str, n: int) -> str:
        slope, largest, _ = growth[name]
        return mb(largest["end_to_end"][name]["peak_rss_mb_max"] + slope * (n - largest["records"]))

    out = [
        "Peak memory per record read: "
        + ", ".join(f"{name} ≈ {_bytes(slope * 1024 * 1024)} ({span})" for name, (slope, _, span) in growth.items())
        + ". Ours streams: `extract` hands each record to the record cache as its page arrives and keeps only "
        "the 32-byte digests it dedupes on, and the build keeps a 62-byte key row per record. The naive pipeline "
        "keeps every hit in a list until the end, by design."
    ]
    for entry in runs:
        naive = entry["end_to_end"]["naive"]
        if naive.get("killed_at_mb") and not naive["ok_runs"]:
            out.append(
                f"At {count(entry['records'])} records the naive pipeline was stopped when its memory passed the "
                f"benchmark's {mb(cap)} cap (at {mb(naive['killed_at_mb'])})"
                + (
                    f"; at its measured growth it would need ≈ {projected('naive', entry['records'])}."
                    if "naive" in growth
                    else "."
                )
            )
    largest_run = max(e["records"] for e in runs)
    for n in [e["records"] for e in sizes if e.get("build") and not e.get("end_to_end") and e["records"] > largest_run]:
        out.append(
            f"Not run end to end at {count(n)} records: at the measured growth "
            + ", ".join(f"{name} ≈ {projected(name, n)}" for name in growth)
            + "; the dataset build above is measured at that size."
        )
    return out


def _bytes(value: float) -> str:
    return f"{value / 1024:.0f} KB" if abs(value) >= 10 * 1024 else f"{value:.0f} bytes"


def _loadgen(results: dict[str, Any] | None) -> list[str]:
    lines = ["## 2. Load generator", ""]
    if not results:
        return [*lines, "_Not run in this invocation (`--only` excluded it)._", ""]
    lines += [
        "Against a zero-latency endpoint (`bench/endpoint.py`: a bare asyncio HTTP/1.1 server in its own process that "
        "answers at once, far faster than any Python client), each tool offers an open-loop Poisson schedule at a "
        f"fixed rate for {results.get('duration_s', '—')} s per level (plus a short warm-up). A request is *late* when it "
        f"goes out more than {results.get('late_threshold_s', 0.02) * 1000:.0f} ms after its planned time. The highest "
        f"sustained rate is the highest rate with under {results.get('late_limit', 0.01):.0%} late, no errors and ≥ 90 % "
        "of the offered rate achieved: rates step up ×1.5 from 100/s until one fails (a failing level is measured once more before it counts), then two geometric bisections, "
        "then the winner is re-run three times; if most re-runs fail it steps down ×1.25 and is confirmed again; "
        "the figures are the medians of the confirming re-runs. Each level is a fresh process. CPU per "
        "request is the generator process's CPU time over the requests it sent: its whole cost per request, HTTP "
        "client included.",
        "",
    ]
    rows = []
    for name, tool in (results.get("tools") or {}).items():
        rows.append(
            [
                tool.get("tool", name),
                (
                    rate(tool["max_rate"])
                    + (" (ceiling of the search)" if tool.get("hit_ceiling") else "")
                    + (f" (stepped down {tool['stepped_down']}×)" if tool.get("stepped_down") else "")
                )
                if tool.get("max_rate")
                else "below 100/s",
                rate(tool.get("first_failing_rate")),
                _num(tool.get("confirm_late_share"), ".2%"),
                rate(tool.get("confirm_throughput_rps")),
                micros(tool.get("cpu_per_request_s")),
                _num(tool.get("cpu_share"), ".0%"),
                micros(tool.get("latency_p50_s")),
            ]
        )
    lines += _table(
        [
            "tool (one process)",
            "highest rate, < 1 % late",
            "first failing rate",
            "late at best rate",
            "achieved",
            "CPU per request",
            "CPU share",
            "latency p50",
        ],
        rows,
    )
    lines.append("")
    if results.get("locust_missing"):
        lines += [f"Locust was not measured: {results['locust_missing']}.", ""]
    noop, over = results.get("noop") or {}, results.get("overhead") or {}
    lines += [
        "**Timing overhead per request** (ours):",
        "",
        f"- with a request function that does nothing (no HTTP: scheduling, timing, records and the lag ticker "
        f"alone) at {rate(noop.get('rate'))}: {micros(noop.get('cpu_per_request_s'))} CPU per request "
        f"(late share {_num(noop.get('late_share'), '.1%')}, achieved {rate(noop.get('throughput_rps'))});",
        f"- against the endpoint at {rate(over.get('rate'))}, ours {micros(over.get('ours_cpu_per_request_s'))} vs a plain "
        f"asyncio + {over.get('plain_client', 'httpx')} loop {micros(over.get('plain_cpu_per_request_s'))} CPU per request: "
        f"{micros(over.get('difference_s'))} of bookkeeping per request (median of {over.get('rounds', 0)} interleaved "
        f"pairs); measured latency p50 {micros(over.get('ours_latency_p50_s'))} vs {micros(over.get('plain_latency_p50_s'))}.",
        "",
    ]
    return lines


def _gpu_cell(answer: dict[str, Any] | None) -> str:
    """``**GPUs** [low–high]`` (a confidence interval), ``**GPUs** bracket [low–high]`` from a per-level table
    (no per-request rows); an open end as ``open``."""
    if not answer or answer.get("gpus") is None:
        return "—"
    low, high = answer.get("gpus_low"), answer.get("gpus_high")
    label = "" if answer.get("interval_kind") == "confidence" else " bracket"
    return f"**{answer['gpus']}**{label} [{'open' if low is None else low}–{'open' if high is None else high}]"


def _inside(answer: dict[str, Any], value: int) -> bool:
    low, high = answer.get("gpus_low"), answer.get("gpus_high")
    return (low is None or low <= value) and (high is None or value <= high)


def _sizing_cases(cases: list[dict[str, Any]]) -> list[str]:
    """The side-by-side table of one set of cases and its one-paragraph tally."""
    rows = []
    for case in cases:
        t, ours, nat = case["truth"], case["ours"], case.get("nat") or {}
        lat = case["latency"]
        params = (
            f"{lat['replicas']}×batch {lat['max_batch']}, d0 {lat['decode_s_per_token']}, d1 {lat['decode_s_per_token_per_request']}; "
            f"{case['tokens']['input']}→{case['tokens']['output']} tokens"
        )
        c_low, c_high = ours.get("c_star_low"), ours.get("c_star_high")
        rows.append(
            [
                f"{case['case']}: {case['description']}",
                params,
                f"{t['target_s']:.2f} s",
                f"{t['c_star']} / **{t['gpus']}**",
                f"{_num(ours.get('c_star'), '.1f')} [{'open' if c_low is None else format(c_low, '.1f')}–"
                f"{'open' if c_high is None else format(c_high, '.1f')}]",
                _gpu_cell(ours),
                _gpu_cell(case.get("ours_pinned")),
                _gpu_cell(case.get("ours_per_level")),
                _num(nat.get("c_star"), ".1f") if nat.get("c_star") is not None else (nat.get("error") or "—"),
                f"**{_num(nat.get('gpus'), '.2f')}** (ceil {_num(nat.get('gpus_rounded_up'), 'd')})",
                ", ".join(f"{x:g}" for x in nat.get("outliers_removed") or []) or "none",
            ]
        )
    lines = _table(
        [
            "case",
            "server, request",
            "p95 target",
            "truth C* / GPUs",
            "ours C* [90 %]",
            "ours GPUs, balanced [90 %]",
            "ours GPUs, pinned [90 %]",
            "ours, per-level table only [bracket]",
            "NAT C*",
            "NAT GPUs",
            "NAT dropped levels",
        ],
        rows,
    )
    lines.append("")
    exact = [c for c in cases if c["ours"].get("gpus") is not None and c["truth"]["gpus"] is not None]
    if exact:

        def error(key: str) -> str:
            errs = [
                abs(c[key]["gpus"] - c["truth"]["gpus"]) / c["truth"]["gpus"]
                for c in exact
                if (c.get(key) or {}).get("gpus")
            ]
            return f"{sum(errs) / len(errs):.0%}" if errs else "—"

        def under(key: str) -> int:
            return sum(
                1 for c in exact if (c.get(key) or {}).get("gpus") is not None and c[key]["gpus"] < c["truth"]["gpus"]
            )

        covered = {
            key: sum(_inside(c.get(key) or {}, c["truth"]["gpus"]) for c in exact)
            for key in ("ours", "ours_pinned", "ours_per_level")
        }
        lines += [
            f"Mean absolute GPU error: ours balanced {error('ours')}, pinned {error('ours_pinned')}, NAT {error('nat')}. "
            f"Under-provisioned (fewer GPUs than the truth): balanced {under('ours')}, pinned {under('ours_pinned')}, "
            f"NAT {under('nat')} of {len(exact)}. The truth lies inside our interval in {covered['ours_pinned']} of "
            f"{len(exact)} cases pinned and {covered['ours']} balanced; inside the per-level table's measured bracket "
            f"in {covered['ours_per_level']}.",
            "",
        ]
    return lines


def _sizing(results: dict[str, Any] | None) -> list[str]:
    lines = ["## 3. Sizing accuracy", ""]
    if not results:
        return [*lines, "_Not run in this invocation (`--only` excluded it)._", ""]
    lines += [
        "The NIM simulator's latency model is a continuous-batching server with a known steady state, so for each "
        "parameter set the true answer is computed exactly (`max_concurrency_under`: the largest concurrency whose "
        f"p95 meets the target; `replicas_needed`: replicas for {results.get('users')} users). Each set is swept "
        f"with `agent_flywheel.scaling.loadgen` ({results.get('requests_per_level')}; levels from replicas × max "
        "batch only: 1, 2, 4 and ½, 1, 1½, 2 and 3 times it) and the same sweep is sized four ways: by "
        "`agent_flywheel.scaling.sizing.solve.size` with requests balanced over replicas (the default: "
        "`ceil(users / C* per replica)`) and with users pinned to replicas (`--sticky-sessions`: whole users per "
        "replica), each with its 90 % interval from the per-request rows; by the same method from the sweep's "
        "per-level table alone (one p95 per level, so no confidence interval: the GPUs between the measured levels "
        "around C* are given as a bracket); and by the NeMo Agent Toolkit's "
        "straight line (`nat_linear_estimate`: IQR outlier removal, OLS, `GPUs = users / C* × test GPUs`, "
        "fractional as it reports it). A replica is one simulated replica of one GPU. The simulator's requests are "
        "identical and its balancer keeps each client on its replica, so its truth is the pinned one; the balanced "
        "answer divides by the fraction of a user, which is right when requests vary and a balancer evens out the "
        "load, and up to one user per replica short here. Fewer GPUs than the truth means the SLO is missed in "
        "production.",
        "",
    ]
    simulated = results.get("simulated")
    if simulated:
        lines += [
            "**On a simulated clock** (the simulator's scheduler in-process, driven by the load generator in an event "
            f"loop whose time moves only when every request waits: the latency model exactly, no HTTP, whatever else "
            f"the machine does; {simulated.get('passes')} passes per level):",
            "",
            *_sizing_cases(simulated.get("cases", [])),
        ]
    lines += [
        "**Over HTTP**, as a user would measure: against the simulator in its own process (`time_scale` "
        f"{results.get('time_scale')}, the target scaled alike; passes per level: {results.get('passes')}). Measured "
        "p95 includes the HTTP round trip and any delay from other processes on the machine, which the exact model "
        "does not have; that bias pushes every method towards more GPUs.",
        "",
        *_sizing_cases(results.get("cases", [])),
    ]
    lines += ["Measured p95 per level over HTTP (simulated seconds):", ""]
    for case in results.get("cases", []):
        points = ", ".join(f"{float(c):g}: {_num(v, '.2f')}" for c, v in case["measured_p95_s"].items())
        lines.append(f"- {case['case']}: {points}")
    return [*lines, ""]


def _signed(value: Any, truth: Any, spec: str = "+d") -> str:
    if value is None or truth is None:
        return "—"
    diff = value - truth
    return format(diff, spec if spec.startswith("+") else "+" + spec)


def _flywheel(results: dict[str, Any] | None) -> list[str]:
    lines = ["## 4. Flywheel wall time and overhead", ""]
    if not results:
        return [*lines, "_Not run in this invocation (`--only` excluded it)._", ""]
    if results.get("error"):
        return [*lines, f"The run failed: `{results['error'][:400]}`", ""]
    lines += [
        f"The demo as `flywheel demo` runs it, in one fresh process with its own Prefect home and MLflow store: the "
        f"local stack as separate processes with the job clock at {_num(results.get('clock_speed'), 'g')}× and the NIM answering "
        f"without simulated latency, {count(results.get('traffic_requests'))} demo user turns through the agent, then "
        "`asyncio.run(flywheel(...))` with configs/flywheel.yaml (three candidates; two fine-tuned), "
        f"`full_rebuild`, and `poll_interval_s` {results.get('poll_interval_s')} s instead of 5 s to match the fast clock. "
        "Every Prefect task's function is wrapped with a timer; at each instant the run is doing *task work* "
        "(deploying, uploading, polling NeMo jobs, building datasets ...), *MLflow* (only `mlflow-*` task bodies "
        "running) or *Prefect* (neither: the engine creating runs, moving states, entering concurrency slots, "
        "writing artifacts and events). Orchestration = Prefect + MLflow, counted only on the critical path.",
        "",
    ]
    cold = results.get("cold") or {}
    att = cold.get("attribution") or {}
    lines += _table(
        ["demo phase", "wall time"],
        [
            ["stack start (5 simulators)", seconds(results.get("stack_up_s"))],
            [
                f"traffic ({count(results.get('traffic_requests'))} turns) and log flush",
                seconds(results.get("traffic_s")),
            ],
            ["import the flow (Prefect, MLflow ...)", seconds(results.get("import_s"))],
            [
                f"first flywheel run, {cold.get('candidates')} candidates (cold: starts Prefect's temporary server)",
                seconds(cold.get("wall_s")),
            ],
            ["  of which before the first task starts", seconds(cold.get("before_first_task_s"))],
            [
                "  of which task work / MLflow / Prefect",
                f"{seconds(att.get('work_s'))} / {seconds(att.get('mlflow_s'))} / {seconds(att.get('prefect_s'))}",
            ],
            ["  orchestration share", f"**{_num(att.get('orchestration_share'), '.0%')}**"],
        ],
        "lr",
    )
    lines += ["", "Warm runs (same process, server already up), medians:", ""]
    warm_rows = []
    for k, w in (results.get("warm") or {}).items():
        warm_rows.append(
            [
                k,
                str(w["runs"]),
                seconds(w["wall_s"]),
                seconds(w["work_s"]),
                seconds(w["mlflow_s"]),
                seconds(w["prefect_s"]),
                f"**{_num(w['orchestration_share'], '.0%')}**",
            ]
        )
    lines += _table(["candidates", "runs", "wall", "task work", "MLflow", "Prefect", "orchestration share"], warm_rows)
    outcomes = [f"{r['candidates']}: {r.get('outcome', '—')}" for r in results.get("runs") or []]
    if outcomes:
        lines += ["", "Gate outcome of each run in order (candidates: outcome): " + "; ".join(outcomes) + "."]
    lines += [
        "",
        f"**Cost of one more candidate NIM: {seconds(results.get('per_candidate_s'))} of wall time** (median wall time, "
        "most candidates minus fewest, divided by the difference). Candidates run concurrently, so it is the extra "
        "orchestration and MLflow logging of the added subflow, not its jobs, that costs time.",
        "",
    ]
    slowest = sorted(((k, v) for k, v in (att.get("task_seconds") or {}).items()), key=lambda kv: -kv[1])[:6]
    if slowest:
        lines += [
            "Summed task-body time in the cold run (overlapping tasks add up): "
            + ", ".join(f"`{k}` {seconds(v)}" for k, v in slowest)
            + ".",
            "",
        ]
    return lines


def _multiload_rows(runs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for run in runs:
        if run.get("error"):
            rows.append(
                [count(run.get("users")), str(run.get("processes")), "failed: " + str(run["error"])[-120:]] + [""] * 8
            )
            continue
        generators = run.get("generators") or []
        server = run.get("server") or {}
        rows.append(
            [
                count(run.get("users")),
                str(run.get("processes")),
                count(run.get("requests")),
                f"**{_num(run.get('late_share'), '.1%')}**",
                " / ".join(_num(g.get("late_share"), ".1%") for g in generators) if len(generators) > 1 else "",
                f"{micros(run.get('overhead_p50_s'))} / {micros(run.get('overhead_p95_s'))}",
                micros(run.get("client_cpu_per_request_s")),
                micros(run.get("loop_lag_p99_s")),
                rate(run.get("throughput_rps")),
                _num(server.get("timer_late_p99_ms"), "d", " ms"),
                _num((run.get("load_after") or [None])[0], ".1f"),
            ]
        )
    return rows


def _multiload_verdict(runs: list[dict[str, Any]], limit: float) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The one-process run and the best run from several processes at the most users where several processes
    stayed under ``limit`` late while one process alone did not; failing that, at the most users measured."""
    ok = [r for r in runs if not r.get("error")]
    pairs = []
    for users in sorted({r["users"] for r in ok}):
        one = next((r for r in ok if r["users"] == users and r["processes"] == 1), None)
        several = [r for r in ok if r["users"] == users and r["processes"] > 1]
        if one and several:
            pairs.append((one, min(several, key=lambda r: r["late_share"])))
    shown = [(one, best) for one, best in pairs if one["late_share"] >= limit > best["late_share"]]
    if shown:
        return shown[-1]
    return pairs[-1] if pairs else (None, None)


def _multiload(results: dict[str, Any] | None) -> list[str]:
    lines = ["## 5. Load beyond one process", ""]
    if not results:
        return [*lines, "_Not run in this invocation (`--only` excluded it)._", ""]
    aiperf = results.get("aiperf") or {}
    low, high = (aiperf.get("overhead_s") or [None, None])[:2]
    lines += [
        "Agent-shaped load as `flywheel sweep run --processes N` sends it (`run_generators` with `load_sweep.processes "
        "= N`, the `nat-generate` request template, closed loop, no think time) against `bench/agent_stub.py` in its "
        "own process: every request is a workflow of two sequential LLM calls of 0.3–1 s (1.3 s on average), held by "
        "one timer, so the stub costs almost nothing per request. The level is split over the processes (users as "
        "evenly as whole users allow), which start together and are held until all have finished their measured "
        f"requests; each configuration measures {results.get('rounds')} rounds (users × {results.get('rounds')} "
        "requests) after one warm-up round in which the connections are opened, in a fresh process. *Sent late*: "
        "sent more than 20 ms after the user's previous answer arrived (in total and per generator). *Client overhead "
        "per call*: measured latency minus the two calls' planned durations, which the stub derives from the trace id "
        "the client chose; it is everything that is not the LLM calls (the generator's event loop, loopback, the "
        "stub's parsing), and the stub's own timer lateness is shown beside it. CPU per request counts every "
        "generator's CPU (the kernel's loopback work included) over the measured requests; loop lag is the worst "
        "generator's event-loop lag p99. Throughput is over the measured window and includes its tail, so it is "
        "below users ÷ 1.3 s when the rounds are few.",
        "",
    ]
    lines += _table(
        [
            "users",
            "processes",
            "requests",
            "sent late",
            "late by generator",
            "client overhead per call p50 / p95",
            "generator CPU per request",
            "loop lag p99",
            "throughput",
            "stub timer late p99",
            "load average after",
        ],
        _multiload_rows(results.get("runs") or []),
    )
    lines.append("")
    one, best = _multiload_verdict(results.get("runs") or [], results.get("late_limit", 0.01))
    if one and best:
        lines.append(
            f"At {count(one['users'])} users: one process sent {_num(one['late_share'], '.1%')} late with "
            f"{micros(one['overhead_p50_s'])} / {micros(one['overhead_p95_s'])} of client overhead per call (p50 / p95); "
            f"{best['processes']} processes sent {_num(best['late_share'], '.1%')} late with "
            f"{micros(best['overhead_p50_s'])} / {micros(best['overhead_p95_s'])}. Target: under "
            f"{_num(results.get('late_limit', 0.01), '.0%')} late from several processes where one process alone is late: "
            + _verdict(
                best["late_share"] < results.get("late_limit", 0.01)
                and one["late_share"] >= results.get("late_limit", 0.01)
            )
            + f" on this machine ({results.get('cores')} cores)."
        )
        lines.append("")
    if low is not None:
        lines += [
            f"AIPerf, for comparison (not re-measured here: its figure is quoted from {aiperf.get('source')}, measured on "
            f"this project's machine with the same agent shape): {micros(low)}–{micros(high)} of client overhead per "
            f"call at {count(aiperf.get('users'))} users.",
            "",
        ]
    return lines


def _summary(results: dict[str, Any]) -> list[str]:
    rows: list[list[str]] = []
    ext = results.get("extraction") or {}
    built = [e for e in ext.get("sizes", []) if e.get("build")]
    if built:
        largest = max(built, key=lambda e: e["records"])
        ratio = largest["build"]["ratio_build_to_orjson"]
        peak = max((e["build"]["build_datasets"]["peak_rss_mb_max"] or 0.0) for e in built)
        rows.append(
            [
                "1",
                f"dataset build, {count(largest['records'])} records: time ÷ orjson parse of the same bytes",
                f"{_num(ratio, '.1f', '×')} ({seconds(largest['build']['build_datasets']['seconds'])})",
                f"< {BUILD_RATIO_TARGET:g}×: {_verdict(None if ratio is None else ratio < BUILD_RATIO_TARGET)}",
            ]
        )
        cold = largest["build"].get("ratio_cold_to_orjson")
        if cold is not None:
            rows.append(
                [
                    "1",
                    "the same, cold (no key files: the build computes every record's keys itself)",
                    f"{_num(cold, '.1f', '×')} ({seconds(largest['build']['build_cold']['seconds'])})",
                    "",
                ]
            )
        rows.append(
            [
                "1",
                "dataset build peak memory, largest over all sizes",
                mb(peak),
                f"< 1.5 GB: {_verdict(peak < MEMORY_TARGET_MB)}",
            ]
        )
    cap = ext.get("memory_cap_mb")
    for entry in [e for e in ext.get("sizes", []) if e.get("end_to_end")]:
        n = entry["records"]

        rows.append(
            [
                "1",
                f"log store → dataset files, {count(n)} records: ours vs naive (rate, peak RSS)",
                f"{_pipeline_cell(entry['end_to_end']['ours'], n, cap)} vs {_pipeline_cell(entry['end_to_end']['naive'], n, cap)}",
                "",
            ]
        )
    lg = results.get("loadgen") or {}
    for name, tool in (lg.get("tools") or {}).items():
        if name in ("ours", "locust"):
            rows.append(
                [
                    "2",
                    f"highest rate one process sustains, < 1 % late: {tool.get('tool', name)}",
                    f"{rate(tool.get('max_rate'))}, {micros(tool.get('cpu_per_request_s'))} CPU per request",
                    "",
                ]
            )
    if lg.get("noop"):
        rows.append(
            [
                "2",
                "our timing overhead per request (no-op request function)",
                micros(lg["noop"].get("cpu_per_request_s")),
                "",
            ]
        )
    sizing = results.get("sizing") or {}
    for case, how in [(c, "simulated clock") for c in (sizing.get("simulated") or {}).get("cases", [])] + [
        (c, "HTTP") for c in sizing.get("cases", [])
    ]:
        nat = case.get("nat") or {}
        rows.append(
            [
                "3",
                f"GPUs for {sizing['users']} users, case {case['case']} ({how}): truth / ours balanced [90 %] / "
                "pinned / NAT",
                f"{case['truth']['gpus']} / {_gpu_cell(case['ours'])} / {_gpu_cell(case.get('ours_pinned'))} / "
                f"{_num(nat.get('gpus'), '.2f')}",
                "",
            ]
        )
    fw = results.get("flywheel") or {}
    if fw.get("cold"):
        warm = fw.get("warm") or {}
        biggest = warm.get(str(max((int(k) for k in warm), default=0))) if warm else None
        rows.append(
            [
                "4",
                "demo end to end (stack, traffic, cold flywheel run)",
                seconds(
                    (fw.get("stack_up_s") or 0)
                    + (fw.get("traffic_s") or 0)
                    + (fw.get("import_s") or 0)
                    + fw["cold"]["wall_s"]
                ),
                "",
            ]
        )
        most = max((int(k) for k in warm), default=None)
        rows.append(
            [
                "4",
                f"orchestration share of a flywheel run (cold with {fw['cold']['candidates']} / warm with {most} candidates)",
                f"{_num(fw['cold']['attribution']['orchestration_share'], '.0%')} / "
                f"{_num(biggest['orchestration_share'] if biggest else None, '.0%')}",
                "",
            ]
        )
        rows.append(["4", "extra wall time per added candidate NIM", seconds(fw.get("per_candidate_s")), "≈ 0"])
    ml = results.get("multiload") or {}
    limit = ml.get("late_limit", 0.01)
    one, best = _multiload_verdict(ml.get("runs") or [], limit)
    if one and best:
        ok_runs = [r for r in ml.get("runs") or [] if not r.get("error")]
        for users in sorted({r["users"] for r in ok_runs}):
            at = [r for r in ok_runs if r["users"] == users]
            target = ""
            if users == ml.get("target_users"):
                several = [r for r in at if r["processes"] > 1]
                met = bool(several) and min(r["late_share"] for r in several) < limit
                target = f"< 1 % from several processes: {_verdict(met)} ({ml.get('cores')} cores)"
            elif users == one["users"] and one["late_share"] >= limit > best["late_share"]:
                target = "several under 1 % where one is late"
            rows.append(
                [
                    "5",
                    f"{count(users)} agent-shaped users: sent late from "
                    + " / ".join(str(r["processes"]) for r in at)
                    + " processes",
                    " / ".join(_num(r["late_share"], ".1%") for r in at),
                    target,
                ]
            )
        aiperf = (ml.get("aiperf") or {}).get("overhead_s") or [None, None]
        rows.append(
            [
                "5",
                f"client overhead per call (p50) at {count(one['users'])} users: 1 / {best['processes']} processes; "
                f"AIPerf at {count((ml.get('aiperf') or {}).get('users'))} (issue #14)",
                f"{micros(one['overhead_p50_s'])} / {micros(best['overhead_p50_s'])}; {micros(aiperf[0])}–{micros(aiperf[1])}",
                "",
            ]
        )
    if not rows:
        return []
    return ["## Summary", "", *_table(["#", "figure", "result", "target"], rows, "clll"), ""]


def render(results: dict[str, Any], findings: str | None = None) -> str:
    """The whole document."""
    lines = [
        "# Benchmarks",
        "",
        "Speed and scale of the flywheel's data path, load generator, sizing and orchestration, measured side by "
        "side with the alternatives. Written by `make bench` (`python -m bench`); `python -m bench --quick` is the "
        "three-minute smoke version and `--only extraction,loadgen,sizing,flywheel,multiload` runs a part (the other parts "
        "keep their last results). These are benchmarks, not tests: nothing here fails a build. Every figure is a "
        "median of several runs (the run counts are in the tables), ratios are taken between runs made back to "
        "back in the same round, and each measurement runs in a fresh process so that its peak memory is its own.",
        "",
    ]
    lines += _machine(results)
    lines += _summary(results)
    if findings:
        lines += ["## Findings", "", findings.strip(), ""]
    lines += _extraction(results.get("extraction"))
    lines += _loadgen(results.get("loadgen"))
    lines += _sizing(results.get("sizing"))
    lines += _flywheel(results.get("flywheel"))
    lines += _multiload(results.get("multiload"))
    return "\n".join(lines).rstrip() + "\n"


def write(results: dict[str, Any], path: Path, findings: str | None = None) -> Path:
    """Write the document (creating its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(results, findings), encoding="utf-8")
    return path
