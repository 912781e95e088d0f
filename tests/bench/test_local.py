"""make bench: a tiny run of the real benchmark (one config, short steps) into a temp dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import markdown_rows
from tests.bench.cluster_record import record, scaleout_record
from tests.load_helpers import free_port


@pytest.mark.slow
def test_quick_bench_writes_results_markdown_and_plot(kgops, tmp_path: Path):
    out, plot, results = tmp_path / "BENCH.md", tmp_path / "img" / "b.png", tmp_path / "r.json"
    result = kgops(
        "bench",
        "--settings",
        "tuned",
        "--workers",
        "1",
        "--protocols",
        "v2",
        "--fixed-duration",
        "1",
        "--step-duration",
        "1",
        "--max-rate",
        "200",
        "--no-wrk",
        "--generator-workers",
        "2",
        "--generator-max-rate",
        "600",
        "--no-runtimes",
        "--fast-port",
        str(free_port()),
        "--master-port",
        str(free_port()),
        "--wait-for-quiet",
        "0",
        "--out",
        str(out),
        "--plot",
        str(plot),
        "--results",
        str(results),
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(results.read_text())
    [config] = data["configs"]
    assert (config["setting"], config["workers"], config["protocol"]) == ("tuned", 1, "v2")
    assert config["fixed"]["requests"] == 80 and config["fixed"]["errors"] == 0
    assert config["fixed"]["latency_ms"]["p99"] >= config["fixed"]["latency_ms"]["p50"] > 0
    # Doubling from 100 until a step fails (200 is the ceiling), then each step lies between
    # the best passing and the lowest failing rate so far.
    steps = config["steps"]
    assert steps[0]["rate"] == 100
    low, high = 0.0, float("inf")
    for i, step in enumerate(steps):
        if step["attempt"] == 2:  # a failing step is measured once more at the same rate
            assert not steps[i - 1]["pass"] and steps[i - 1]["rate"] == step["rate"]
        else:
            assert low < step["rate"] < high and step["rate"] <= 200
        if step["pass"]:
            low = step["rate"]
        elif step["attempt"] == 2:
            high = step["rate"]
        within = step["latency_ms"]["p99"] <= 50 and step["achieved_rps"] >= 0.95 * step["rate"]
        assert step["pass"] == (step["errors"] == 0 and within)
    assert config["max"] is None if low == 0 else config["max"]["rate"] == low
    assert data["machine"]["cores"] >= 1 and data["machine"]["cpu"]
    assert plot.read_bytes().startswith(b"\x89PNG")
    text = out.read_text()
    assert "## Machine" in text and data["machine"]["cpu"] in text
    rows = markdown_rows(text)
    assert ["tuned", "v2", "1"] in [r[:3] for r in rows]
    assert "![benchmark](img/b.png)" in text
    assert "wrk cross-check skipped: --no-wrk" in text
    # The generator's own limit: 2 workers against the fast server, from 250 req/s up to 600.
    [limit] = data["generator"]["limits"]
    assert limit["workers"] == 2 and limit["steps"][0]["rate"] == 250
    for step in limit["steps"]:
        assert step["requests"] == step["rate"] or not step["pass"]  # 1 s steps
        assert step["generator_cpu_ms_per_request"] > 0
    _, generator = text.split("## Load generator limits")
    assert markdown_rows(generator)[1][0] == "2"  # its first row: 2 workers
    assert "unless --no-runtimes" in text and "runtimes" not in data
    # No wait asked for: the load average is still recorded, and a busy start flagged.
    quiet = data["quiet"]
    assert quiet["timeout_s"] == 0 and len(quiet["load_average"]) == 3
    flagged = "**Flagged: started on a busy machine.**" in text
    assert flagged == (not quiet["quiet"]) == ("FLAGGED" in result.stdout)

    # The markdown and the plot can be rebuilt from the saved results without measuring.
    out.unlink()
    plot.unlink()
    rebuilt = kgops(
        "bench",
        "--from-results",
        "--out",
        str(out),
        "--plot",
        str(plot),
        "--results",
        str(results),
        timeout=60,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert out.read_text() == text and plot.is_file()


def minimal_results(cluster_not_run: str | None) -> dict:
    """What `kgops bench --from-results` needs to render, with nothing measured locally."""
    return {
        "date": "2026-12-07 21:00 UTC",
        "machine": {"cpu": "test cpu", "cores": 2, "memory_gib": 1, "os": "x", "python": "3.11"},
        "versions": {},
        "knobs": {"fixed_s": 1, "step_s": 1, "p99_ms": 50, "start_rate": 100, "resolution": 1.15},
        "load_average_start": [0, 0, 0],
        "load_average_end": [0, 0, 0],
        "configs": [],
        "wrk": None,
        "wrk_skipped": "--no-wrk",
        "cluster_not_run": cluster_not_run,
    }


def test_benchmarks_md_renders_the_cluster_record_and_says_what_was_not_run(kgops, tmp_path: Path):
    out, plot, results = tmp_path / "BENCH.md", tmp_path / "b.png", tmp_path / "r.json"
    args = ("bench", "--from-results", "--out", str(out), "--plot", str(plot))
    results.write_text(json.dumps(minimal_results("not root (the real node needs root)")))
    done = kgops(*args, "--results", str(results), timeout=120)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "Not measured: `make bench-cluster` has not run." in text
    assert "Cluster part not run by this `make bench`: not root (the real node needs root)." in text

    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "cluster-path.json").write_text(json.dumps(record()))
    results.write_text(json.dumps(minimal_results(None)))
    done = kgops(*args, "--results", str(results), timeout=120)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    # One file: the cluster sections from the record, a heading level down, with its date.
    assert "## Cluster-path latency at the SLO rate" in text
    assert "on 2026-12-07 21:00 UTC, env dev" in text
    assert "### KServe's table through the real node" in text
    assert "![replicas and latency over time](benchmarks/cluster-scaleout.png)" in text
    assert "not run by this" not in text

    # The scale-out measured in another environment: its own record, date, env and declared
    # autoscaling, a heading down after the first.
    first = record(scaleout=None)
    (tmp_path / "benchmarks" / "cluster-path.json").write_text(json.dumps(first))
    (tmp_path / "benchmarks" / "cluster-scaleout.json").write_text(json.dumps(scaleout_record()))
    done = kgops(*args, "--results", str(results), timeout=120)
    assert done.returncode == 0, done.stderr
    path, scale = out.read_text().split("## Cluster paths on the real node: scale-out\n")
    assert "on 2026-12-07 21:00 UTC, env dev" in path and "Scale-out" not in path
    assert "### KServe's table through the real node" in path
    assert "--env staging --parts scaleout`) on 2026-12-07 22:10 UTC, env staging." in scale
    assert "### Machine" in scale and "### Scale-out under a rising open-loop load" in scale
    assert "Declared by environment staging" in scale and "replicas 1-4" in scale
    assert "![replicas and latency over time](benchmarks/cluster-scaleout.png)" in scale
