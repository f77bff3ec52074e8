"""Benchmark 1: extraction and dataset build, against the blueprint's naive pipeline and a parse-only bound.

Three things are measured on the same generated records (:mod:`bench.data`), each in its own process
(:func:`bench.measure.run_isolated`) so its peak memory is its own:

- **dataset build** (the issue's target): ``build_datasets`` reading the record cache exactly as the
  flow's ``build-datasets`` task does (the cache and its key files), through dedupe, split, ICL and
  the dataset files; and *cold*, with the key files deleted, so the build computes every key itself. ``data_split_config.limit`` is the number of records, so every usable record ends
  up in a file (the heaviest case; the flow's default limit of 1,000 would write a few thousand lines).
- **end to end** from the log store (the log server simulator in its own process, SQLite, loaded by
  ``_bulk``): ours = ``extract`` (PIT + search_after, validation, dedupe) → the record cache →
  ``build_datasets``, as the flow's tasks chain them; naive = the blueprint's algorithm re-implemented
  from its description (``reference/blueprint-data-flywheel.md`` §2.3-2.4): scroll every hit into a
  list, validate with its checks, dedupe in a Python loop on the tuple of user messages, random sample,
  split, format, write.
- **bounds**: parsing the same bytes line by line with orjson (the fastest JSON parser installed) and
  with the standard library's ``json``, objects discarded as they are made.

Every round runs the bound and the pipelines back to back, so the ratio of a round compares runs made
under the same machine load; reported figures are medians over rounds.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from bench import data
from bench.measure import Isolated, load_average, median, peak_rss_mb, run_isolated, spread

INDEX = "flywheel"
FULL_SIZES = (10_000, 100_000, 1_000_000)
FULL_EXTRACT_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (2_000, 8_000)
QUICK_EXTRACT_SIZES = (2_000,)
BULK_CHUNK = 1000


# --------------------------------------------------------------------------------------------------
# Child-side measurements (run in a fresh interpreter by run_isolated)
# --------------------------------------------------------------------------------------------------


def parse_file(path: str, parser: str) -> dict[str, Any]:
    """Parse every line of ``path`` with ``parser`` (``orjson`` or ``json``), discarding the objects.

    Why discard: a streaming pipeline holds one record at a time, so the bound is the parse itself, not
    the cost of keeping a million parsed records alive.
    """
    if parser == "orjson":
        import orjson

        loads: Any = orjson.loads
    else:
        loads = json.loads
    records = size = 0
    started = time.perf_counter()
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                loads(line)
                records += 1
                size += len(line)
    return {"seconds": time.perf_counter() - started, "records": records, "bytes": size}


def _configs(records: int) -> tuple[Any, Any, Any, list[Any]]:
    from agent_flywheel.config import DataSplitConfig, EvaluationConfig, ICLConfig, NIMConfig

    split = DataSplitConfig(limit=max(records, 50), eval_size=100, val_ratio=0.1, min_total_records=50, random_seed=42)
    models = [NIMConfig(model_name="meta/llama-3.2-1b-instruct", context_length=8192)]
    return split, ICLConfig(), EvaluationConfig(), models


def _cache(root: str) -> Any:
    from agent_flywheel.records.cache import RecordCache

    return RecordCache(Path(root), data.WORKLOAD_ID, data.CLIENT_ID)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(cache_root: str, records: int, out_dir: str, cold: bool = False) -> dict[str, Any]:
    """``build_datasets`` over the record cache, the way the flow's ``build-datasets`` task calls it.

    ``cold``: the segments' key files are deleted first (not timed), so the build computes every record's
    keys itself, as the first build after an upgrade of the key format does (it saves them again).
    """
    from agent_flywheel.datasets.build import build_datasets
    from agent_flywheel.records.keys import key_file

    split, icl, evaluation, models = _configs(records)
    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    cache = _cache(cache_root)
    if cold:
        for segment in cache.segments():
            key_file(segment).unlink(missing_ok=True)
    started = time.perf_counter()
    built = build_datasets(cache, split, icl, evaluation, models, out)
    seconds = time.perf_counter() - started
    result = {"seconds": seconds, "counts": built.counts, "removed": built.removed, "output_bytes": _dir_bytes(out)}
    shutil.rmtree(out, ignore_errors=True)
    return result


def ours_end_to_end(url: str, records: int, work_dir: str) -> dict[str, Any]:
    """Log store → ``extract`` streaming into the record cache → ``build_datasets``: the flow's first two tasks,
    timed by stage (extraction includes writing the cache and its key files, as the ``extract-logs`` task does)."""
    from elasticsearch import Elasticsearch

    from agent_flywheel.datasets.build import build_datasets
    from agent_flywheel.logstore.elastic import ElasticsearchClient
    from agent_flywheel.logstore.reader import extract
    from agent_flywheel.logstore.serializer import LogStoreSerializer
    from agent_flywheel.records.quarantine import QuarantineWriter

    work = Path(work_dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    split, icl, evaluation, models = _configs(records)
    cache = _cache(str(work / "records"))
    # as the LogStore block makes it
    es = ElasticsearchClient(Elasticsearch(url, request_timeout=600, serializer=LogStoreSerializer()))
    started = time.perf_counter()
    with QuarantineWriter(work / "quarantine.jsonl") as quarantine:
        result, written = cache.replace_window(
            "run",
            lambda sink: extract(
                es,
                INDEX,
                workload_id=data.WORKLOAD_ID,
                client_id=data.CLIENT_ID,
                limit=None,  # the whole window, as the flow's extract-logs task reads by default
                page_size=500,
                quarantine=quarantine,
                sink=sink,
            ),
        )
    cached = time.perf_counter()
    scanned, quarantined, duplicates = result.scanned, sum(result.quarantined.values()), result.duplicates
    extract_peak_mb = peak_rss_mb()
    built = build_datasets(cache, split, icl, evaluation, models, work / "datasets")
    finished = time.perf_counter()
    es.close()
    out = {
        "seconds": finished - started,
        "extract_seconds": cached - started,
        "build_seconds": finished - cached,
        "extract_peak_rss_mb": extract_peak_mb,
        "scanned": scanned,
        "quarantined": quarantined,
        "duplicates": duplicates,
        "cached": written,
        "counts": built.counts,
        "output_bytes": _dir_bytes(work / "datasets"),
    }
    shutil.rmtree(work, ignore_errors=True)
    return out


def breakdown(path: str, records: int) -> dict[str, Any]:
    """Where the dataset build's time goes, per step, on the first ``records`` lines of the cache.

    Each step runs over all the records on its own and throws its results away, as the streaming build
    does; inputs prepared beforehand are moved out of the garbage collector's view (``gc.freeze``) so
    that keeping them does not slow the step down. The bound is the same orjson parse of the same lines.
    The keys are computed when the record cache is written, not by the build; they are timed here too.
    """
    import gc
    import hashlib

    import orjson

    from agent_flywheel.datasets import formats
    from agent_flywheel.jsonlines import IO_BUFFER_BYTES, dump_line
    from agent_flywheel.records import conversation, keys

    with open(path, "rb") as handle:
        lines = [line for _, line in zip(range(records), handle, strict=False)]
    parsed = [orjson.loads(line) for line in lines]
    n = len(parsed)
    messages = [keys.request_messages(r) or [] for r in parsed]
    tools = [keys.request_tools(r) for r in parsed]
    answers = [keys.response_message(r) or {} for r in parsed]
    examples = [formats.to_training_example(r, True) for r in parsed]
    out = [dump_line(e) for e in examples]
    scratch = Path(path).with_name("breakdown-writes.jsonl")
    gc.collect()
    gc.freeze()
    steps: dict[str, float] = {}

    def timed(name: str, work: Callable[[], Any]) -> None:
        started = time.perf_counter()
        work()
        steps[name] = (time.perf_counter() - started) / n * 1e6

    def each(function: Callable[..., Any], *columns: list[Any]) -> Callable[[], None]:
        def loop() -> None:
            for args in zip(*columns, strict=True):
                function(*args)

        return loop

    def write_all(buffering: int) -> Callable[[], None]:
        def loop() -> None:
            with open(scratch, "wb", buffering=buffering) as handle:
                for line in out:
                    handle.write(line)

        return loop

    try:
        timed("parse: orjson (the bound)", each(orjson.loads, lines))
        timed("parse: json", each(json.loads, lines))
        timed("record keys (when the cache is written; the build reads them)", each(keys.record_keys, parsed))
        timed("  of which conversation_hash", each(conversation.conversation_hash, messages, tools))
        timed(
            "  of which render_example (ICL example length)",
            each(lambda m, a: conversation.render_example(1, m, a), messages, answers),
        )
        timed("build: parse the line again (orjson)", each(orjson.loads, lines))
        timed("build: to_training_example", each(lambda r: formats.to_training_example(r, True), parsed))
        timed("build: output line (orjson)", each(dump_line, examples))
        timed("build: sha256 of the output", each(lambda b: hashlib.sha256(b).digest(), out))
        timed("build: write, 1 MiB buffer", write_all(IO_BUFFER_BYTES))
        timed("  before: write, default 8 KiB buffer", write_all(-1))
    finally:
        gc.unfreeze()
        scratch.unlink(missing_ok=True)
    bound = steps["parse: orjson (the bound)"]
    return {"records": n, "steps_us": steps, "steps_x_bound": {k: v / bound for k, v in steps.items()}}


# The blueprint's naive pipeline ----------------------------------------------------------------------


def _first_message(record: dict[str, Any]) -> dict[str, Any] | None:
    try:
        message = record["response"]["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return None
    return message if isinstance(message, dict) else None


def _openai_format_ok(record: dict[str, Any]) -> bool:
    """``OpenAIFormatValidator.validate_chat_completion_format`` as the blueprint's code does it."""
    request, response = record.get("request"), record.get("response")
    if not isinstance(request, dict) or not isinstance(response, dict):
        return False
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        return False
    for tool in request.get("tools") or []:
        properties = ((tool.get("function") or {}).get("parameters") or {}).get("properties") or {}
        if len(properties) > 8:
            return False
    choices = response.get("choices")
    return isinstance(choices, list) and bool(choices) and all(isinstance(c, dict) and "message" in c for c in choices)


def _quality_ok(record: dict[str, Any]) -> bool:
    """The tool-calling quality filter: every call a function, string arguments parsed (or the record goes)."""
    message = _first_message(record)
    calls = message.get("tool_calls") if message else None
    if not calls:
        return False
    for call in calls:
        if call.get("type") != "function":
            return False
        function = call.get("function") or {}
        if isinstance(function.get("arguments"), str):
            try:
                function["arguments"] = json.loads(function["arguments"])
            except json.JSONDecodeError:
                return False
    return True


def _tool_name(record: dict[str, Any]) -> str:
    message = _first_message(record) or {}
    calls = message.get("tool_calls") or []
    return str(calls[0]["function"]["name"]) if calls else "no_tool"


def _stratified(items: list[int], labels: list[str], size: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """A stratified test split of ``size`` items (sklearn's ``train_test_split(stratify=...)`` stands in here)."""
    by_label: dict[str, list[int]] = {}
    for item, label in zip(items, labels, strict=True):
        by_label.setdefault(label, []).append(item)
    test: list[int] = []
    for members in by_label.values():
        rng.shuffle(members)
        test += members[: round(size * len(members) / len(items))]
    rng.shuffle(test)
    test = test[:size]
    chosen = set(test)
    return [i for i in items if i not in chosen], test


def _training_line(record: dict[str, Any]) -> dict[str, Any]:
    messages = [
        {**m, "content": m.get("content") or ""} if m.get("role") == "assistant" else m
        for m in record["request"]["messages"]
    ]
    answer = {**(_first_message(record) or {}), "content": ""}
    return {"messages": [*messages, answer], "tools": record["request"].get("tools") or []}


def _eval_line(record: dict[str, Any]) -> dict[str, Any]:
    messages = []
    for message in record["request"]["messages"]:
        calls = message.get("tool_calls")
        if calls:
            calls = [
                {**c, "function": {**c["function"], "arguments": json.dumps(c["function"]["arguments"])}}
                if isinstance(c.get("function", {}).get("arguments"), dict)
                else c
                for c in calls
            ]
            message = {**message, "tool_calls": calls}
        messages.append(message)
    return {**record, "request": {**record["request"], "messages": messages}}


def _icl_text(record: dict[str, Any]) -> str:
    lines = ["For example, if the conversation looks like this:"]
    lines += [
        f"{m.get('role')}: {m.get('content')}" for m in record["request"]["messages"] if m.get("role") != "system"
    ]
    message = _first_message(record) or {}
    lines += ["", "Then you'll respond with:", f"assistant: {message.get('content')}"]
    lines += ["Tool calls:", json.dumps(message.get("tool_calls"), indent=2)]
    return "\n".join(lines)


def _write_jsonl(path: Path, lines: Iterator[dict[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(json.dumps(line) + "\n")
            count += 1
    return count


def naive_end_to_end(url: str, records: int, work_dir: str) -> dict[str, Any]:
    """The blueprint's pipeline from its description: everything in lists, dedupe in a Python loop."""
    from elasticsearch import Elasticsearch

    work = Path(work_dir)
    shutil.rmtree(work, ignore_errors=True)
    limit, eval_size, val_ratio, seed, max_examples = max(records, 50), 100, 0.1, 42, 3
    es = Elasticsearch(url, request_timeout=600)
    started = time.perf_counter()
    # record_exporter.get_records: match query, newest first, scroll until 2 x limit.
    query = {"bool": {"must": [{"match": {"client_id": data.CLIENT_ID}}, {"match": {"workload_id": data.WORKLOAD_ID}}]}}
    response = es.search(
        index=INDEX, query=query, sort=[{"timestamp": {"order": "desc"}}], scroll="2m", size=min(1000, limit * 2)
    )
    scroll_id, hits = response["_scroll_id"], response["hits"]["hits"]
    raw = [hit["_source"] for hit in hits]
    while hits and len(raw) < limit * 2:
        response = es.scroll(scroll_id=scroll_id, scroll="2m")
        scroll_id, hits = response["_scroll_id"], response["hits"]["hits"]
        raw.extend(hit["_source"] for hit in hits)
    es.clear_scroll(scroll_id=scroll_id)
    es.close()
    raw = raw[: limit * 2]
    read = time.perf_counter()
    # create_datasets: workload type, format check, quality filter, dedupe, sample.
    tool_calling = any((_first_message(r) or {}).get("tool_calls") for r in raw if isinstance(r, dict))
    valid = [r for r in raw if _openai_format_ok(r)]
    filtered = [r for r in valid if _quality_ok(r)] if tool_calling else valid
    seen: set[Any] = set()
    deduped = []
    for record in filtered:
        try:
            key = tuple(m["content"] for m in record["request"]["messages"] if m.get("role") == "user")
            if key in seen:
                continue
            seen.add(key)
        except (KeyError, TypeError, AttributeError):
            pass
        deduped.append(record)
    rng = random.Random(seed)
    selected = rng.sample(deduped, min(limit, len(deduped)))
    # util.split_records: labels, singletons become "others", stratified eval, then a random train/val.
    labels = [_tool_name(r) for r in selected]
    counts = Counter(labels)
    labels = [label if counts[label] > 1 else "others" for label in labels]
    positions = list(range(len(selected)))
    rest, eval_positions = _stratified(positions, labels, min(eval_size, len(selected)), rng)
    rng.shuffle(rest)
    n_val = int(len(rest) * val_ratio)
    val_positions, train_positions = rest[:n_val], rest[n_val:]
    # ICL (uniform): the shortest train example of each tool, prepended to each eval record's system message.
    shortest: dict[str, tuple[int, int]] = {}
    for position in train_positions:
        size = len(json.dumps(selected[position]))
        label = labels[position]
        if label not in shortest or size < shortest[label][0]:
            shortest[label] = (size, position)
    examples = [_icl_text(selected[p]) for _, p in sorted(shortest.values())[:max_examples]]
    block = "Here are some examples of how you should respond:\n\n" + "\n\n".join(examples)

    def with_icl(record: dict[str, Any]) -> dict[str, Any]:
        messages = list(record["request"]["messages"])
        if messages and messages[0].get("role") == "system":
            messages[0] = {**messages[0], "content": f"{block}\n\n{messages[0].get('content') or ''}"}
        else:
            messages.insert(0, {"role": "system", "content": block})
        return {**record, "request": {**record["request"], "messages": messages}}

    written = {
        "eval": _write_jsonl(work / "base" / "eval_data.jsonl", (_eval_line(selected[p]) for p in eval_positions)),
        "icl": _write_jsonl(
            work / "icl" / "eval_data.jsonl", (_eval_line(with_icl(selected[p])) for p in eval_positions)
        ),
        "train": _write_jsonl(
            work / "train" / "training" / "train_data.jsonl", (_training_line(selected[p]) for p in train_positions)
        ),
        "validation": _write_jsonl(
            work / "train" / "validation" / "val_data.jsonl", (_training_line(selected[p]) for p in val_positions)
        ),
    }
    finished = time.perf_counter()
    out = {
        "seconds": finished - started,
        "read_seconds": read - started,
        "build_seconds": finished - read,
        "read": len(raw),
        "valid": len(valid),
        "filtered": len(filtered),
        "deduplicated": len(deduped),
        "written": written,
        "output_bytes": _dir_bytes(work),
    }
    shutil.rmtree(work, ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------------


def load_store(url: str, raw_path: Path) -> dict[str, Any]:
    """Index every raw line into the log server with ``_bulk`` (setup, timed for information only)."""
    from elasticsearch import Elasticsearch

    from agent_flywheel.logstore.elastic import ElasticsearchClient
    from agent_flywheel.logstore.index import ensure_index

    es = Elasticsearch(url, request_timeout=600)
    ensure_index(ElasticsearchClient(es), INDEX)
    es.close()
    started = time.perf_counter()
    action = json.dumps({"index": {"_index": INDEX}}).encode() + b"\n"
    indexed = errors = 0
    with httpx.Client(base_url=url, timeout=600) as client, open(raw_path, "rb") as lines:
        chunk: list[bytes] = []

        def flush() -> None:
            nonlocal indexed, errors
            reply = client.post(
                "/_bulk", content=b"".join(chunk), headers={"content-type": "application/x-ndjson"}
            ).json()
            for item in reply["items"]:
                outcome = next(iter(item.values()))
                if outcome.get("status", 500) < 300:
                    indexed += 1
                else:
                    errors += 1
            chunk.clear()

        for line in lines:
            chunk += [action, line]
            if len(chunk) >= 2 * BULK_CHUNK:
                flush()
        if chunk:
            flush()
        client.post(f"/{INDEX}/_refresh")
    return {"seconds": time.perf_counter() - started, "indexed": indexed, "errors": errors}


def _summary(runs: list[Isolated], key: str = "seconds") -> dict[str, Any]:
    ok = [r for r in runs if r.ok]
    return {
        "runs": len(runs),
        "ok_runs": len(ok),
        "seconds": median(r.result.get(key) for r in ok),
        "seconds_spread": spread(r.result.get(key) for r in ok),
        "cpu_seconds": median(r.cpu_s for r in ok),
        "peak_rss_mb": median(r.peak_rss_mb for r in ok),
        "peak_rss_mb_max": max((r.peak_rss_mb or 0.0 for r in ok), default=None),
        "errors": [r.error for r in runs if not r.ok],
        "killed_at_mb": max((r.killed_at_mb or 0.0 for r in runs if r.killed_at_mb), default=None),
        "last": ok[-1].result if ok else None,
    }


def _ratio_median(numerators: list[Isolated], denominators: list[Isolated]) -> float | None:
    """Median over rounds of numerator/denominator, each pair measured back to back."""
    ratios = []
    for a, b in zip(numerators, denominators, strict=False):
        if a.ok and b.ok and b.result.get("seconds"):
            ratios.append(a.result["seconds"] / b.result["seconds"])
    return median(ratios)


def build_entry(
    bound: list[Isolated],
    stdlib: list[Isolated],
    builds: list[Isolated],
    counts: data.Counts,
    cold: list[Isolated] | None = None,
) -> dict[str, Any]:
    """The dataset-build figures of one size: medians per measurement and per-round ratios."""
    return {
        "orjson_parse": _summary(bound),
        "json_parse": _summary(stdlib),
        "build_datasets": _summary(builds),
        "build_cold": _summary(cold) if cold else None,
        "ratio_build_to_orjson": _ratio_median(builds, bound),
        "ratio_cold_to_orjson": _ratio_median(cold, bound) if cold else None,
        "ratio_json_to_orjson": _ratio_median(stdlib, bound),
        "cache_records": counts.cache_records,
        "cache_bytes": counts.cache_bytes,
    }


def end_to_end_entry(
    loaded: dict[str, Any], bound: list[Isolated], ours: list[Isolated], naive: list[Isolated]
) -> dict[str, Any]:
    """The log-store figures of one size: ours and naive, their stages, per-round ratios to the bound."""
    return {
        "load": loaded,
        "orjson_parse_raw": _summary(bound),
        "ours": _summary(ours),
        "naive": _summary(naive),
        "ratio_ours_to_orjson": _ratio_median(ours, bound),
        "ratio_naive_to_orjson": _ratio_median(naive, bound),
        "ratio_naive_to_ours": _ratio_median(naive, ours),
        "ours_extract_seconds": median(r.result.get("extract_seconds") for r in ours if r.ok),
        "ours_build_seconds": median(r.result.get("build_seconds") for r in ours if r.ok),
        "ours_extract_peak_rss_mb": median(r.result.get("extract_peak_rss_mb") for r in ours if r.ok),
        "naive_read_seconds": median(r.result.get("read_seconds") for r in naive if r.ok),
    }


def run(
    *,
    quick: bool,
    data_dir: Path,
    sizes: tuple[int, ...] | None = None,
    extract_sizes: tuple[int, ...] | None = None,
    rounds: int | None = None,
    keep_data: bool = False,
    memory_cap_mb: float = 6144,
    log: Any = print,
) -> dict[str, Any]:
    """Every size: generate, then rounds of (bounds, build[, bulk-loaded store: ours, naive]); medians."""
    from bench.servers import simulator

    sizes = sizes if sizes is not None else (QUICK_SIZES if quick else FULL_SIZES)
    extract_sizes = (
        extract_sizes if extract_sizes is not None else (QUICK_EXTRACT_SIZES if quick else FULL_EXTRACT_SIZES)
    )
    results: dict[str, Any] = {"sizes": [], "memory_cap_mb": memory_cap_mb, "loads": []}

    def isolated(function: str, **args: Any) -> Isolated:
        """One measurement: this module's ``function`` in a fresh interpreter, under the memory cap."""
        return run_isolated(f"bench.extraction:{function}", args, memory_cap_mb=memory_cap_mb, timeout_s=3600.0)

    for size in sorted(set(sizes) | set(extract_sizes)):
        n_rounds = rounds or (1 if quick else 3)
        directory = data_dir / f"records-{size}"
        spec = data.Spec(size)
        started = time.perf_counter()
        counts = data.generate(spec, directory)
        generated_s = time.perf_counter() - started
        checked = data.check_cache_equivalence(spec, sample=100)
        cache_root = directory / "cache-root"
        segment = cache_root / data.WORKLOAD_ID / data.CLIENT_ID / "00000000T000000000000-bench.jsonl"
        if not segment.exists():
            segment.parent.mkdir(parents=True, exist_ok=True)
            segment.hardlink_to(directory / "cache.jsonl")
        log(f"extraction: {size} records generated ({counts.raw_bytes / 1e6:.0f} MB raw) in {generated_s:.1f} s")
        entry: dict[str, Any] = {
            "records": size,
            "data": counts.to_json(),
            "rounds": n_rounds,
            "equivalence_checked": checked,
        }
        if size in sizes:
            bound: list[Isolated] = []
            stdlib: list[Isolated] = []
            builds: list[Isolated] = []
            colds: list[Isolated] = []
            for r in range(n_rounds):
                results["loads"].append(load_average())
                bound.append(isolated("parse_file", path=str(directory / "cache.jsonl"), parser="orjson"))
                stdlib.append(isolated("parse_file", path=str(directory / "cache.jsonl"), parser="json"))
                # The cold build (first round only: it is the slow one) saves the key files the builds read.
                for cold, runs in ((True, colds), (False, builds)) if r == 0 else ((False, builds),):
                    runs.append(
                        isolated(
                            "build", cache_root=str(cache_root), records=size, out_dir=str(directory / "out"), cold=cold
                        )
                    )
                log(
                    f"extraction: {size} round {r + 1}/{n_rounds}: orjson {_s(bound[-1])}, json {_s(stdlib[-1])}, "
                    f"build {_s(builds[-1])} ({_mb(builds[-1])})"
                    + (f", cold build {_s(colds[-1])} ({_mb(colds[-1])})" if r == 0 else "")
                )
            entry["build"] = build_entry(bound, stdlib, builds, counts, colds)
        if size in extract_sizes:
            with simulator("logserver", directory / "logserver") as url:
                loaded = load_store(url, directory / "raw.jsonl")
                log(f"extraction: {size} records bulk-loaded into the log server in {loaded['seconds']:.1f} s")
                bound_raw: list[Isolated] = []
                ours: list[Isolated] = []
                naive: list[Isolated] = []
                for r in range(n_rounds if size < 100_000 else 1):
                    results["loads"].append(load_average())
                    bound_raw.append(isolated("parse_file", path=str(directory / "raw.jsonl"), parser="orjson"))
                    ours.append(isolated("ours_end_to_end", url=url, records=size, work_dir=str(directory / "ours")))
                    naive.append(isolated("naive_end_to_end", url=url, records=size, work_dir=str(directory / "naive")))
                    log(
                        f"extraction: {size} end to end round {r + 1}: orjson {_s(bound_raw[-1])}, ours {_s(ours[-1])} "
                        f"({_mb(ours[-1])}), naive {_s(naive[-1])} ({_mb(naive[-1])})"
                    )
            shutil.rmtree(directory / "logserver", ignore_errors=True)
            entry["end_to_end"] = end_to_end_entry(loaded, bound_raw, ours, naive)
        results["sizes"].append(entry)
        if not keep_data:
            shutil.rmtree(directory, ignore_errors=True)
    return results


def _s(run: Isolated) -> str:
    return f"{run.result['seconds']:.2f} s" if run.ok else f"failed ({(run.error or '')[:80]})"


def _mb(run: Isolated) -> str:
    return f"{run.peak_rss_mb:.0f} MB" if run.ok and run.peak_rss_mb else "-"
