"""The cluster-path record published: the JSON first, the plots beside it, then the markdown
(bench.cluster.publish, bench.cluster_plots), from a made-up record."""

from __future__ import annotations

import json
from pathlib import Path

from kserve_gitops.bench import cluster, cluster_report
from tests.bench.cluster_record import record, scaleout_record

PNG = b"\x89PNG"


def test_publish_writes_the_record_the_three_plots_and_the_markdown(tmp_path: Path) -> None:
    out = tmp_path / "bench" / "cluster-path.md"
    text = cluster.publish(record(), out)
    assert json.loads(out.with_suffix(".json").read_text()) == json.loads(json.dumps(record()))
    for name in cluster_report.PLOTS.values():
        assert (out.parent / name).read_bytes().startswith(PNG), name
    assert out.read_text() == text == cluster_report.markdown(record())


def test_only_the_plots_the_record_has_data_for(tmp_path: Path) -> None:
    cluster.draw(record(scaleout=None, cold_starts=[]), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [cluster_report.PLOTS["rates"]]


def test_a_scaleout_only_record_draws_the_scaleout_alone(tmp_path: Path) -> None:
    cluster.draw(scaleout_record(), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [cluster_report.PLOTS["scaleout"]]


def test_a_max_only_record_draws_the_rate_plot_from_the_maxima(tmp_path: Path) -> None:
    doc = record()
    for key in ("records", "rate_records", "cold_starts", "scaleout"):
        doc.pop(key)
    cluster.draw(doc, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [cluster_report.PLOTS["rates"]]


def test_a_scaleout_without_the_autoscalers_desired_scale_still_plots(tmp_path: Path) -> None:
    doc = record()
    for s in doc["scaleout"]["samples"]:
        s["desired"] = None
    doc["scaleout"]["per_second"] = [dict(r, failed=0) for r in doc["scaleout"]["per_second"]]
    cluster.draw(doc, tmp_path)
    assert (tmp_path / cluster_report.PLOTS["scaleout"]).read_bytes().startswith(PNG)
