"""The cluster-path benchmark's plots, committed beside its reports (benchmarks/cluster-path.md,
cluster-scaleout.md), each for a part the record has: latency percentiles per rate per path,
the cold starts' samples, and the scale-out's replicas and latency over time. Each is drawn from
the JSON record alone, so a report can be redrawn without measuring."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from kserve_gitops.bench import rounds

PERCENTILES = ("p50_ms", "p95_ms", "p99_ms")


def rates(
    result: rounds.Rounds,
    points: Sequence[tuple[str, float]],
    maxima: dict[str, dict[str, Any]],
    out: Path,
) -> None:
    """One panel per path: each percentile's median over the rounds per rate, min-max as error
    bars, and the highest passing rate's p99 as a star."""
    paths = list(dict.fromkeys(p for p, _ in points)) or list(maxima)
    fig = Figure(figsize=(4.5 * max(len(paths), 1), 4.2))
    axes = fig.subplots(1, max(len(paths), 1), sharey=True, squeeze=False)[0]
    for ax, path in zip(axes, paths, strict=False):
        xs = sorted(r for p, r in points if p == path)
        for metric in PERCENTILES:
            spreads = [result.spread(f"{path}@{r:g}", metric) for r in xs]
            got = [(x, s) for x, s in zip(xs, spreads, strict=True) if s is not None]
            if not got:
                continue
            ax.errorbar(
                [x for x, _ in got],
                [s.median for _, s in got],
                yerr=[[s.median - s.low for _, s in got], [s.high - s.median for _, s in got]],
                marker="o",
                capsize=3,
                label=metric.removesuffix("_ms"),
            )
        best = (maxima.get(path) or {}).get("max")
        if best:
            ax.plot(
                [best["rate"]],
                [best["latency_ms"]["p99"]],
                marker="*",
                markersize=12,
                linestyle="none",
                color="black",
                label=f"max rate {best['rate']:.0f}/s (p99)",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(path, fontsize=10)
        ax.set_xlabel("offered req/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("ms from scheduled send (median, min-max)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def cold_starts(samples: list[dict[str, float]], out: Path) -> None:
    """Every sample of every phase as a dot, the median as a bar across them."""
    phases = list(samples[0]) if samples else []
    fig = Figure(figsize=(8, 0.6 * len(phases) + 1.5))
    ax = fig.subplots()
    for y, phase in enumerate(phases):
        values = [s[phase] for s in samples]
        ax.scatter(values, [y] * len(values), alpha=0.6, color="tab:blue")
        median = statistics.median(values)
        ax.plot([median, median], [y - 0.3, y + 0.3], color="black", linewidth=2)
    ax.set_yticks(range(len(phases)), phases, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"seconds ({len(samples)} cold starts; bar: median)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def scaleout(record: dict[str, Any], config: dict[str, Any], out: Path) -> None:
    """Replicas (Ready, all pods, desired) and the offered rate above; latency p50/p99 and
    failures per second below, on the same seconds."""
    samples, secs = record["samples"], record["per_second"]
    fig = Figure(figsize=(10, 7))
    top, bottom = fig.subplots(2, 1, sharex=True)
    t = [s["t"] for s in samples]
    top.step(t, [s["ready"] for s in samples], where="post", label="Ready pods")
    top.step(t, [s["pods"] for s in samples], where="post", linestyle=":", label="pods")
    desired = [(s["t"], s["desired"]) for s in samples if s["desired"] is not None]
    if desired:
        top.step(*zip(*desired, strict=True), where="post", linestyle="--", label="desired (KPA)")
    if config.get("max_replicas"):
        top.axhline(config["max_replicas"], color="grey", linewidth=0.8, label="maxReplicas")
    top.set_ylabel("replicas")
    top.legend(fontsize=8, loc="upper left")
    rate = top.twinx()
    ramp = record["ramp"]
    rate.plot([r["t"] for r in secs], [r["completed"] for r in secs], color="tab:grey", alpha=0.5)
    rate.plot([0, ramp["seconds"]], [ramp["start"], ramp["end"]], color="tab:grey", linestyle="--")
    rate.set_ylabel("req/s: completed (grey), offered (dashed)")
    x = [r["t"] for r in secs]
    bottom.plot(x, [r["p50_ms"] or None for r in secs], label="p50")
    bottom.plot(x, [r["p99_ms"] or None for r in secs], label="p99")
    failed = [(r["t"], r["failed"]) for r in secs if r["failed"]]
    if failed:
        errs = bottom.twinx()
        errs.bar(*zip(*failed, strict=True), color="tab:red", alpha=0.4, width=0.8)
        errs.set_ylabel("failed per second (red)")
    bottom.set_yscale("log")
    bottom.set_ylabel("ms from scheduled send")
    bottom.set_xlabel("seconds since the ramp started")
    bottom.legend(fontsize=8, loc="upper left")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    fig.suptitle(
        f"{ramp['start']:g} -> {ramp['end']:g} req/s over {ramp['seconds']:g} s via"
        f" {record['path']}; KPA: stable {config['stable_window_s']:g} s, panic"
        f" {config['stable_window_s'] * config['panic_window_pct'] / 100:g} s at"
        f" {config['panic_threshold_pct']:g}%, target {config['target']:g}"
        f" ({config['utilization_pct']:g}%), containerConcurrency"
        f" {config['container_concurrency']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=100)
