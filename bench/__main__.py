"""``python -m bench [--quick] [--only NAME[,NAME]] [...]``: run the benchmarks, write docs/benchmarks.md.

Results are also saved as JSON (``--results``, default ``.flywheel/bench/results.json``). With ``--only``,
the new results are merged into the saved ones, so the document keeps every section; ``--report-only``
rewrites the document from the saved results without measuring anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.measure import ROOT, load_average, machine, settle

NAMES = ("extraction", "loadgen", "sizing", "flywheel", "multiload")
FINDINGS = Path(__file__).with_name("findings.md")


def _sizes(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    if not text.strip():
        return ()
    return tuple(int(float(part)) for part in text.split(",") if part.strip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Run the benchmarks and write docs/benchmarks.md."
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and short runs (a smoke run, under 3 minutes)"
    )
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(NAMES)}")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md", help="the document to write")
    parser.add_argument(
        "--results", type=Path, default=None, help="results JSON (default .flywheel/bench/results.json)"
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="generated data and scratch (default .flywheel/bench)"
    )
    parser.add_argument("--report-only", action="store_true", help="rewrite the document from the saved results")
    parser.add_argument("--sizes", default=None, help="dataset-build sizes, e.g. 10000,100000,1000000")
    parser.add_argument("--extract-sizes", default=None, help="end-to-end (log store) sizes, e.g. 10000,100000")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per size (default 3, 1 at 1M)")
    parser.add_argument("--keep-data", action="store_true", help="keep the generated records for the next run")
    parser.add_argument("--memory-cap-mb", type=float, default=6144, help="kill a measurement whose RSS passes this")
    parser.add_argument(
        "--locust-python", default=None, help="an interpreter with locust installed (default: autodetect)"
    )
    parser.add_argument(
        "--multiload-users", default=None, help="multiload: concurrent users, e.g. 1000,3000 (default: see the bench)"
    )
    parser.add_argument(
        "--multiload-processes", default=None, help="multiload: generator process counts to compare, e.g. 1,2,4"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run what was asked, save the results, write the document."""
    args = parse_args(argv)
    home = Path(os.environ.get("FLYWHEEL_HOME") or ROOT / ".flywheel")
    work = args.work_dir or home / "bench"
    results_path = args.results or work / "results.json"
    selected = NAMES if args.only is None else tuple(n.strip() for n in args.only.split(",") if n.strip())
    unknown = [n for n in selected if n not in NAMES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(NAMES)}", file=sys.stderr)
        return 2
    previous: dict[str, Any] = {}
    if results_path.exists() and (args.only is not None or args.report_only):
        previous = json.loads(results_path.read_text(encoding="utf-8"))
    if args.report_only:
        return _write(previous, args.out)

    started = time.perf_counter()
    results: dict[str, Any] = {**previous, "machine": machine(), "mode": "quick" if args.quick else "full"}
    loads = [load_average()]

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", flush=True)

    work.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(selected):
        if index:
            settle()
        log(f"{name}: starting")
        if name == "extraction":
            from bench import extraction

            results[name] = extraction.run(
                quick=args.quick,
                data_dir=work / "data",
                sizes=_sizes(args.sizes),
                extract_sizes=_sizes(args.extract_sizes),
                rounds=args.rounds,
                keep_data=args.keep_data,
                memory_cap_mb=args.memory_cap_mb,
                log=log,
            )
            results[name]["breakdown"] = _breakdown(work, args.quick, args.keep_data, log)
            results[name] = _merge_sizes(previous.get(name), results[name])
        elif name == "loadgen":
            from bench import loadgen_bench

            results[name] = loadgen_bench.run(quick=args.quick, locust_python=args.locust_python, log=log)
        elif name == "sizing":
            from bench import sizing_accuracy

            results[name] = sizing_accuracy.run(quick=args.quick, work_dir=work / "sizing", log=log)
        elif name == "flywheel":
            from bench import flywheel_overhead

            results[name] = flywheel_overhead.run(quick=args.quick, work_dir=work / "flywheel", log=log)
        elif name == "multiload":
            from bench import multiload_bench

            results[name] = multiload_bench.run(
                quick=args.quick,
                users=_sizes(args.multiload_users),
                processes=_sizes(args.multiload_processes),
                log=log,
            )
        loads += results[name].get("loads", [])
        log(f"{name}: done")
    loads.append(load_average())
    results["loads"] = [*previous.get("loads", []), *loads]
    results["total_seconds"] = time.perf_counter() - started
    results["history"] = [
        *previous.get("history", []),
        {
            "date": results["machine"]["date"],
            "mode": results["mode"],
            "benchmarks": list(selected),
            "seconds": results["total_seconds"],
            "max_load": max((load[0] for load in loads if load), default=None),
        },
    ]
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    log(f"results saved to {results_path}")
    return _write(results, args.out)


def _merge_sizes(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Keep what an earlier run measured and this one did not: other sizes, and the other part of a size
    (``--only extraction --sizes 1000000 --extract-sizes ''`` re-measures the build of 1M records and keeps
    its end-to-end figures)."""
    if not old or not args_merge_ok(old):
        return new
    earlier = {entry["records"]: entry for entry in old["sizes"]}
    for entry in new["sizes"]:
        for part in ("build", "end_to_end"):
            if part not in entry and part in earlier.get(entry["records"], {}):
                entry[part] = earlier[entry["records"]][part]
    measured = {entry["records"] for entry in new["sizes"]}
    kept = [entry for entry in old["sizes"] if entry["records"] not in measured]
    new["sizes"] = sorted(kept + new["sizes"], key=lambda entry: entry["records"])
    new["loads"] = [*old.get("loads", []), *new.get("loads", [])]
    return new


def args_merge_ok(old: dict[str, Any]) -> bool:
    """An earlier extraction result in the current shape (a list of sizes)."""
    return isinstance(old.get("sizes"), list)


def _breakdown(work: Path, quick: bool, keep_data: bool, log: Any) -> dict[str, Any]:
    """The per-step profile of the dataset build, on its own small generated sample."""
    from bench import data
    from bench.measure import run_isolated

    records = 2_000 if quick else 20_000
    directory = work / "data" / f"breakdown-{records}"
    data.generate(data.Spec(records), directory)
    measured = run_isolated("bench.extraction:breakdown", {"path": str(directory / "cache.jsonl"), "records": records})
    if not keep_data:
        shutil.rmtree(directory, ignore_errors=True)
    log("extraction: build breakdown " + ("done" if measured.ok else f"failed: {(measured.error or '')[:300]}"))
    return measured.result if measured.ok else {"error": measured.error}


def _write(results: dict[str, Any], out: Path) -> int:
    from bench import report

    findings = FINDINGS.read_text(encoding="utf-8") if FINDINGS.exists() else None
    report.write(results, out, findings)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
