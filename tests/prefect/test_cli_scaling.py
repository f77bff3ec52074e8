"""``sizing calc`` and ``profile analyze``: JSON outputs, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from cli.scaling import profile_app, sizing_app
from tests.support.sizing_samples import NAT_DOC_SAMPLE
from tests.support.traces import nat_traces, otlp_document


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def _levels_csv(tmp_path: Path) -> Path:
    path = tmp_path / "levels.csv"
    path.write_text(
        "concurrency,workflow_p95_s,llm_p95_s\n1,1.0,0.3\n2,1.0,0.3\n4,1.1,0.4\n8,1.6,0.7\n16,3.0,1.5\n",
        encoding="utf-8",
    )
    return path


def _requests_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    lines = ["concurrency,workflow_latency_s,llm_latency_s"]
    for c in (1, 2, 4, 8, 16):
        base = 1.0 + max(0, c - 4) * 0.25
        lines += [f"{c},{v:.4f},{v / 3:.4f}" for v in rng.uniform(0.8 * base, 1.2 * base, 60)]
    path = tmp_path / "requests.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _calc(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(sizing_app, ["calc", *args])


def test_sizing_calc_json_per_level(runner: CliRunner, tmp_path: Path) -> None:
    args = ["--sweep", str(_levels_csv(tmp_path)), "--target-workflow-p95", "2", "--target-users", "100"]
    result = _calc(runner, *args, "--test-gpus", "2", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["reachable"] is True and data["bracket"] == [8.0, 16.0]
    assert 8 <= data["slo_concurrency"] <= 16
    # no per-request samples: the GPUs for the two measured levels around C* (16: 7 × 2, 8: 13 × 2), a bracket
    assert (data["gpus_low"], data["gpus_high"]) == (14, 26) and data["gpus_low"] <= data["gpus"] <= data["gpus_high"]
    assert data["interval_kind"] == "bracket" and "not a confidence interval" in data["interval_notes"][0]
    assert isinstance(data["gpus"], int) and data["gpus"] % 2 == 0
    assert set(data) >= {"slo_concurrency", "gpus", "gpus_low", "gpus_high", "reachable", "reason", "assumptions"}


@pytest.mark.parametrize(
    ("extra", "replicas", "gpus", "gpus_per_replica", "traffic"),
    [
        ([], 9, 72, 8, "balanced"),  # the system under test is one replica of 8 GPUs: ceil(100 / 11.5)
        (["--sticky-sessions"], 10, 80, 8, "sticky"),  # pinned users: 11 whole users per replica
        (["--gpus-per-replica", "1"], 70, 70, 1, "balanced"),  # 8 replicas in the test: 1.44 users each
    ],
)
def test_sizing_calc_on_the_toolkit_documentation_sample(
    runner: CliRunner, tmp_path: Path, extra: list[str], replicas: int, gpus: int, gpus_per_replica: int, traffic: str
) -> None:
    sweep = tmp_path / "nat-doc.csv"
    NAT_DOC_SAMPLE.to_csv(sweep, index=False)
    args = ["--sweep", str(sweep), "--target-workflow-p95", "10", "--target-users", "100", "--test-gpus", "8"]
    data = json.loads(_calc(runner, *args, *extra, "--json").stdout)
    assert (data["replicas"], data["gpus"]) == (replicas, gpus)
    assert data["assumptions"]["gpus_per_replica"] == gpus_per_replica and data["assumptions"]["traffic"] == traffic
    assert data["interval_kind"] == "bracket" and data["gpus_low"] <= gpus <= data["gpus_high"]
    assert (data["slo_concurrency_low"], data["slo_concurrency_high"]) == (8.0, 16.0)
    assert data["nat_linear"]["gpus"] == pytest.approx(75.35, abs=0.01)
    text = _calc(runner, *args, *extra).stdout
    assert f"**{replicas} replicas × {gpus_per_replica} GPU(s) = {gpus} GPUs** for 100 concurrent users" in text
    bracket = f"(measured bracket {data['gpus_low']}–{data['gpus_high']})"
    assert bracket in text and "| 16 | — | 12.677 | unknown |" in text


def test_sizing_calc_json_per_request_with_llm_target_and_plots(runner: CliRunner, tmp_path: Path) -> None:
    plots = tmp_path / "plots"
    result = _calc(
        runner,
        "--sweep",
        str(_requests_csv(tmp_path)),
        "--target-workflow-p95",
        "3",
        "--target-llm-p95",
        "0.6",
        "--target-users",
        "50",
        "--test-gpus",
        "1",
        "--bootstrap-samples",
        "200",
        "--plots",
        str(plots),
        "--json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["reachable"] and data["binding_metric"] == "llm"
    assert data["gpus_low"] <= data["gpus"] <= data["gpus_high"]
    assert (plots / "latency_vs_concurrency.png").exists() and (plots / "sizing.png").exists()


def test_sizing_calc_unreachable_is_an_answer(runner: CliRunner, tmp_path: Path) -> None:
    args = ["--sweep", str(_levels_csv(tmp_path)), "--target-workflow-p95", "0.5", "--target-users", "10"]
    result = _calc(runner, *args, "--test-gpus", "1", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["reachable"] is False and data["reason"].startswith("not reachable:")
    text = _calc(runner, *args, "--test-gpus", "1")
    assert text.exit_code == 0 and "Not reachable" in text.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-workflow-p95", "2", "--target-users", "10", "--test-gpus", "1"], "--sweep"),
        (
            ["--sweep", "{missing}", "--target-workflow-p95", "2", "--target-users", "10", "--test-gpus", "1"],
            "no such file",
        ),
        (
            ["--sweep", "{bad}", "--target-workflow-p95", "2", "--target-users", "10", "--test-gpus", "1"],
            "a sweep needs",
        ),
        (
            ["--sweep", "{good}", "--target-workflow-p95", "-1", "--target-users", "10", "--test-gpus", "1"],
            "--target-workflow-p95",
        ),
        (
            ["--sweep", "{good}", "--target-workflow-p95", "2", "--target-users", "10", "--test-gpus", "0"],
            "--test-gpus",
        ),
        (
            [
                "--sweep",
                "{good}",
                "--target-workflow-p95",
                "2",
                "--target-users",
                "10",
                "--test-gpus",
                "8",
                "--gpus-per-replica",
                "3",
            ],
            "--gpus-per-replica: the system under test must be whole replicas",
        ),
    ],
)
def test_sizing_calc_errors_are_one_line(runner: CliRunner, tmp_path: Path, args: list[str], message: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("concurrency,latency\n1,2\n", encoding="utf-8")
    paths = {"{missing}": str(tmp_path / "nope.csv"), "{bad}": str(bad), "{good}": str(_levels_csv(tmp_path))}
    result = _calc(runner, *[paths.get(a, a) for a in args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.output


def test_profile_analyze_json_both_formats(runner: CliRunner, tmp_path: Path) -> None:
    otlp = tmp_path / "spans.jsonl"
    otlp.write_text(json.dumps(otlp_document()) + "\n", encoding="utf-8")
    nat = tmp_path / "all_requests_profiler_traces.json"
    nat.write_text(json.dumps(nat_traces()), encoding="utf-8")
    gantt = tmp_path / "gantt.png"
    result = runner.invoke(profile_app, ["analyze", "--traces", str(otlp), "--json", "--gantt", str(gantt)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["workflow"]["count"] == 1 and data["llm"]["count"] == 3
    assert {"name", "count", "p50_s", "p95_s", "critical_path_share"} <= set(data["steps"][0])
    assert isinstance(data["bottleneck"], str) and gantt.exists()
    result = runner.invoke(profile_app, ["analyze", "--traces", str(nat), "--json"])
    assert result.exit_code == 0
    latencies = sorted(c["latency_s"] for c in json.loads(result.stdout)["llm_calls"])
    assert latencies == pytest.approx([3.0, 4.5])
    text = runner.invoke(profile_app, ["analyze", "--traces", str(nat)])
    assert text.exit_code == 0 and "Bottleneck" in text.stdout


def test_profile_analyze_errors_are_one_line(runner: CliRunner, tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("this is not json", encoding="utf-8")
    for args, message in (
        (["analyze"], "--traces"),
        (["analyze", "--traces", str(tmp_path / "none.json")], "no such file"),
        (["analyze", "--traces", str(junk)], "neither JSON nor JSON lines"),
    ):
        result = runner.invoke(profile_app, args)
        assert result.exit_code == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
