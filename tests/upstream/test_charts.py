"""The upstream chart cache: the charts the manifests name, from CHART_DIR (checked against its
sources.tsv) or pulled from an HTTP repository, verified on every use."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kserve_gitops.checks import platform_consistency
from kserve_gitops.repo import Repo
from kserve_gitops.upstream import charts
from kserve_gitops.upstream.charts import ChartRef
from tests import REPO

REF = ChartRef("demo", "v1.2.3", "https://charts.example.invalid")


def _chart(root: Path, name: str = "demo", version: str = "1.2.3") -> Path:
    """A small but real chart: Chart.yaml, values, one template."""
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text(f"apiVersion: v2\nname: {name}\nversion: {version}\n")
    (root / "values.yaml").write_text("replicas: 1\n")
    (root / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\n"
        "data:\n  replicas: {{ .Values.replicas | quote }}\n"
    )
    return root


def _chart_dir(tmp_path: Path, ref: ChartRef = REF, digest: str | None = None) -> Path:
    """A CHART_DIR holding `ref` and a sources.tsv row for it (its true digest by default)."""
    folder = tmp_path / "offline"
    src = _chart(folder / ref.chart / ref.version)
    row = f"{ref.chart}\t{ref.version}\t{digest or charts.tree_sha256(src)}\n"
    (folder / "sources.tsv").write_text("chart\tversion\tfiles_sha256\n" + row)
    return folder


def test_required_names_every_chart_versions_yaml_pins() -> None:
    pinned = platform_consistency.pinned(REPO.versions)
    required = {(r.chart, r.repository, r.version) for r in charts.required(REPO)}
    assert set(pinned.values()) <= required
    assert {r.chart for r in charts.required(REPO)} >= {"gateway", "kserve-crd", "cert-manager"}


def test_tree_digest_is_the_one_sources_tsv_records(shared_charts: Path) -> None:
    if not (shared_charts / "sources.tsv").is_file():
        pytest.skip(f"{shared_charts} has no sources.tsv")
    rows = (shared_charts / "sources.tsv").read_text().splitlines()[1:]
    chart, version, *_, digest = rows[0].split("\t")
    assert charts.tree_sha256(shared_charts / chart / version) == digest


def test_fills_cache_from_chart_dir_and_records_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHART_DIR", str(_chart_dir(tmp_path)))
    got = charts.ensure(REPO, REF, tmp_path / "cache")
    assert got == tmp_path / "cache" / "demo" / "v1.2.3"
    assert "replicas" in (got / "templates" / "cm.yaml").read_text()
    record = json.loads((got.parent / "v1.2.3.source.json").read_text())
    assert record["files_sha256"] == charts.tree_sha256(got)
    assert record["origin"].endswith("offline/demo/v1.2.3")
    assert charts.ensure(REPO, REF, tmp_path / "cache") == got  # second use: the verified copy


def test_sources_tsv_mismatch_is_an_error_and_caches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHART_DIR", str(_chart_dir(tmp_path, digest="0" * 64)))
    with pytest.raises(charts.ChartError, match=r"files_sha256 mismatch for demo v1\.2\.3.*0{64}"):
        charts.ensure(REPO, REF, tmp_path / "cache")
    assert not (tmp_path / "cache" / "demo").exists()


def test_chart_yaml_of_another_version_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = ChartRef("demo", "1.2.4", REF.repository)
    folder = tmp_path / "offline"
    _chart(folder / "demo" / "1.2.4", version="1.2.3")
    monkeypatch.setenv("CHART_DIR", str(folder))
    with pytest.raises(charts.ChartError, match=r"expected chart demo version 1\.2\.4.*'1\.2\.3'"):
        charts.ensure(REPO, ref, tmp_path / "cache")


def test_edited_cache_is_detected_without_chart_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHART_DIR", str(_chart_dir(tmp_path)))
    got = charts.ensure(REPO, REF, tmp_path / "cache")
    (got / "values.yaml").write_text("replicas: 7\n")
    monkeypatch.delenv("CHART_DIR")
    with pytest.raises(charts.ChartError, match="changed since they were cached"):
        charts.ensure(REPO, REF, tmp_path / "cache", online=False)
    monkeypatch.setenv("CHART_DIR", str(tmp_path / "offline"))  # CHART_DIR restores its copy
    assert (
        charts.ensure(REPO, REF, tmp_path / "cache") / "values.yaml"
    ).read_text() == "replicas: 1\n"


def test_missing_chart_names_it_and_both_ways_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHART_DIR", raising=False)
    with pytest.raises(charts.ChartMissing) as err:
        charts.ensure(REPO, REF, tmp_path / "cache", online=False)
    for part in ("demo v1.2.3", "make charts", REF.repository, "CHART_DIR", "demo/v1.2.3/"):
        assert part in str(err.value)
    monkeypatch.setenv("CHART_DIR", str(tmp_path / "empty"))
    with pytest.raises(charts.ChartMissing, match=r"has no demo/v1\.2\.3/Chart\.yaml"):
        charts.ensure(REPO, REF, tmp_path / "cache")


@pytest.fixture
def chart_repository(tmp_path: Path) -> Iterator[str]:
    """An HTTP Helm repository on 127.0.0.1 serving the demo chart (index.yaml + archive), in a
    process of its own: a thread here would stall whenever Locust's gevent has patched this
    interpreter (another test imported it) while the Helm SDK's Go code holds the caller."""
    import helm_python as helm

    served = tmp_path / "served"
    served.mkdir()
    helm.package(_chart(tmp_path / "build" / "demo"), destination=served)
    port = next((p for p in range(21400, 21500) if _free(p)), None)
    if port is None:
        pytest.fail("no free port in 21400-21499")
    url = f"http://127.0.0.1:{port}"
    helm.repo_index_generate(served, base_url=url)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(served),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while _free(port):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the chart repository on port {port} did not start")
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_pulls_from_an_http_repository_when_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chart_repository: str
) -> None:
    monkeypatch.delenv("CHART_DIR", raising=False)
    ref = ChartRef("demo", "1.2.3", chart_repository)
    got = charts.ensure(REPO, ref, tmp_path / "cache")
    assert (got / "templates" / "cm.yaml").is_file()
    assert chart_repository in json.loads((got.parent / "1.2.3.source.json").read_text())["origin"]
    missing = ChartRef("demo", "9.9.9", chart_repository)
    with pytest.raises(charts.ChartError, match=r"demo 9\.9\.9: pull from http://127.0.0.1"):
        charts.ensure(REPO, missing, tmp_path / "cache")
    assert not (tmp_path / "cache" / "demo" / "9.9.9").exists()


def test_make_charts_fills_the_cache_from_chart_dir(
    repo_copy: Path,
    shared_charts: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = Repo(repo_copy)
    monkeypatch.chdir(repo_copy)
    monkeypatch.setenv("CHART_DIR", str(shared_charts))
    assert charts.main([], repo) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    for ref in charts.required(repo):
        assert f"{ref.chart} {ref.version}: .cache/charts/{ref.chart}/{ref.version}" in out
        assert (repo_copy / ".cache" / "charts" / ref.chart / ref.version / "Chart.yaml").is_file()
    monkeypatch.setenv("CHART_DIR", os.fspath(repo_copy / "nowhere"))
    assert charts.main([], repo) == 1
    first = charts.required(repo)[0]
    assert f"nowhere has no {first.chart}/{first.version}/Chart.yaml" in capsys.readouterr().err
