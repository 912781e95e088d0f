"""The upstream chart cache: every chart the HelmReleases and Argo CD Applications install, at
the version they name, in `.cache/charts/<chart>/<version>/`. `make charts` fills it;
validation and the e2e read it.

Offline, charts come from the folder CHART_DIR names (layout `<chart>/<version>/`, with an
optional `sources.tsv` whose `files_sha256` each copy must match); online, from the HTTP or OCI
repository the manifests name, pulled with the Helm SDK. Every use checks that Chart.yaml
names the chart and version asked for and that the files are the ones cached.

    kgops charts      # fill the cache for every environment
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from kserve_gitops.repo import Repo, files, flux
from kserve_gitops.repo.install_plan import argocd_components
from kserve_gitops.repo.render import RenderError
from kserve_gitops.upstream import tables

SOURCES = "sources.tsv"  # CHART_DIR's provenance list: chart, version, ..., files_sha256


class ChartError(Exception):
    """A chart that is missing, unreadable or not the chart and version asked for."""


class ChartMissing(ChartError):
    """A chart that is not cached and, offline, cannot be fetched."""


@dataclass(frozen=True, order=True)
class ChartRef:
    """One upstream chart as the manifests name it."""

    chart: str
    version: str
    repository: str  # https:// Helm repository, or the oci:// reference of the chart itself

    def __str__(self) -> str:
        return f"{self.chart} {self.version}"


def cache_dir(repo: Repo) -> Path:
    return repo.cache / "charts"


def required(repo: Repo, envs: list[str] | None = None) -> list[ChartRef]:
    """Every upstream chart Flux or Argo CD installs in `envs` (default: all environments)."""
    found: set[ChartRef] = set()
    for env in envs or repo.environment_names:
        found |= {
            ChartRef(r.chart, r.version, r.repository)
            for layer in flux.layers(repo, env)
            for r in layer.releases
            if not r.local
        }
        found |= {
            ChartRef(c.chart, c.version, c.repository)
            for c in argocd_components(repo, env)
            if c.chart and not c.chart.startswith("./")
        }
    return sorted(found)


def tree_sha256(root: Path) -> str:
    """sha256 over the sorted `path NUL sha256(content)` lines of every file under `root`: the
    `files_sha256` of CHART_DIR's sources.tsv, which compares charts by content, not archive."""
    lines = sorted(
        f"{p.relative_to(root).as_posix()}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n"
        for p in root.rglob("*")
        if p.is_file()
    )
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _same_version(a: str, b: str) -> bool:
    # Helm matches versions as semver: "v1.23.0" asks for the chart whose Chart.yaml says 1.23.0.
    return a.removeprefix("v") == b.removeprefix("v")


def _check_identity(repo: Repo, ref: ChartRef, chart_dir: Path) -> None:
    """Chart.yaml of `chart_dir` names the chart and version `ref` asks for."""
    meta_file = chart_dir / "Chart.yaml"
    try:
        meta = yaml.safe_load(meta_file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ChartError(f"{repo.rel(meta_file)}: cannot read the chart of {ref}: {exc}") from exc
    if not isinstance(meta, dict):
        raise ChartError(f"{repo.rel(meta_file)}: expected a mapping")
    name, version = str(meta.get("name")), str(meta.get("version"))
    if name != ref.chart or not _same_version(version, ref.version):
        raise ChartError(
            f"{repo.rel(meta_file)}: expected chart {ref.chart} version {ref.version}, "
            f"Chart.yaml says name {name!r} version {version!r}"
        )


def _stamp(dest: Path) -> Path:
    """Where the cache records the origin and content digest of `dest` (beside the chart, so
    the chart directory holds the chart's files only)."""
    return dest.with_name(f"{dest.name}.source.json")


def files_sha256(dest: Path) -> str:
    """The content digest recorded when `dest`, a directory ensure() returned, was cached."""
    return str(json.loads(_stamp(dest).read_text())["files_sha256"])


def _cached_digest(repo: Repo, ref: ChartRef, dest: Path) -> str:
    """The digest recorded when `dest` was cached, after checking the files still match it."""
    try:
        recorded = json.loads(_stamp(dest).read_text())["files_sha256"]
    except (OSError, ValueError, KeyError) as exc:
        raise ChartError(
            f"{repo.rel(dest)}: no valid record {_stamp(dest).name} of where {ref} came from; "
            f"remove {repo.rel(dest)} and run `make charts`"
        ) from exc
    got = tree_sha256(dest)
    if got != recorded:
        raise ChartError(
            f"{repo.rel(dest)}: files of {ref} changed since they were cached "
            f"(files_sha256 {got}, recorded {recorded}); remove it and run `make charts`"
        )
    _check_identity(repo, ref, dest)
    return got


def _sources(repo: Repo, chart_dir: Path) -> dict[tuple[str, str], str]:
    """(chart, version) -> files_sha256 from CHART_DIR/sources.tsv, when the folder has one."""
    table = chart_dir / SOURCES
    if not table.is_file():
        return {}
    rows = tables.read_tsv(
        repo, table, ("chart", "version", "files_sha256"), ChartError, "chart provenance list"
    )
    return {(r["chart"], r["version"]): r["files_sha256"].lower() for r in rows}


def _install(src: Path, dest: Path, origin: str) -> None:
    """Copy the chart at `src` into the cache as `dest`, whole or not at all, and record it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        for item in sorted(src.rglob("*")):
            target = tmp / item.relative_to(src)
            if item.is_dir():
                target.mkdir()
            else:
                # Plain copies: offline folders may be read-only, the cache must stay removable.
                shutil.copyfile(item, target)
                target.chmod(0o644)
        tmp.chmod(0o755)
        digest = tree_sha256(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record = {"chart": dest.parent.name, "version": dest.name, "origin": origin}
    files.write_text(_stamp(dest), json.dumps({**record, "files_sha256": digest}, indent=2) + "\n")


def _from_chart_dir(repo: Repo, ref: ChartRef, dest: Path, chart_dir: Path) -> Path:
    """The chart from CHART_DIR, verified; the cached copy is used while it equals that one."""
    src = chart_dir / ref.chart / ref.version
    if not (src / "Chart.yaml").is_file():
        raise ChartMissing(
            f"chart {ref}: CHART_DIR={chart_dir} has no {ref.chart}/{ref.version}/Chart.yaml; "
            f"add it there, or unset CHART_DIR and run `make charts` online to pull it from "
            f"{ref.repository}"
        )
    got = tree_sha256(src)
    expected = _sources(repo, chart_dir).get((ref.chart, ref.version))
    if expected is not None and got != expected:
        raise ChartError(
            f"{src}: files_sha256 mismatch for {ref}: {chart_dir / SOURCES} says {expected}, "
            f"the files give {got}"
        )
    if dest.is_dir():
        try:
            if _cached_digest(repo, ref, dest) == got:
                return dest
        except ChartError:
            pass  # a stale or damaged copy: CHART_DIR's replaces it below
    _check_identity(repo, ref, src)
    _install(src, dest, str(src))
    return dest


def _pull(repo: Repo, ref: ChartRef, dest: Path) -> Path:
    """The chart from the repository the manifests name, with the Helm SDK (no helm binary)."""
    import helm_python as helm

    oci = ref.repository.startswith("oci://")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            helm.pull(
                ref.repository if oci else ref.chart,
                repo_url=None if oci else ref.repository,
                version=ref.version,
                destination=tmp,
                untar=True,
                untar_dir=Path(tmp) / "chart",
            )
        except helm.HelmError as exc:
            raise ChartError(
                f"chart {ref}: pull from {ref.repository} failed ({str(exc).strip()}); offline, "
                f"set CHART_DIR to a folder holding {ref.chart}/{ref.version}/"
            ) from exc
        # Helm unpacks into a folder named by the archive's Chart.yaml: one folder, whatever
        # its name, so that a chart of another name fails the identity check below.
        [pulled] = (Path(tmp) / "chart").iterdir()
        _check_identity(repo, ref, pulled)
        _install(pulled, dest, f"{ref.repository} ({ref.chart} {ref.version})")
    return dest


def ensure(repo: Repo, ref: ChartRef, cache: Path | None = None, online: bool = True) -> Path:
    """The verified cache directory of `ref` (in `cache`, default .cache/charts), filled from
    CHART_DIR when set, else (if `online`) pulled from its repository. ChartMissing when it can
    be had neither way."""
    cache = cache or cache_dir(repo)
    dest = cache / ref.chart / ref.version
    offline_dir = os.environ.get("CHART_DIR")
    if offline_dir:
        return _from_chart_dir(repo, ref, dest, Path(offline_dir))
    if dest.is_dir():
        _cached_digest(repo, ref, dest)
        return dest
    if not online:
        raise ChartMissing(
            f"chart {ref} is not in {repo.rel(cache)}: run `make charts` online (pulls it "
            f"from {ref.repository}), or set CHART_DIR to a folder holding "
            f"{ref.chart}/{ref.version}/ (CI uses ../shared/charts)"
        )
    return _pull(repo, ref, dest)


def chart_dir(repo: Repo, chart: str, version: str, online: bool = True) -> Path:
    """The cached chart directory of one chart the manifests name, e.g. ("gateway", "1.30.3")."""
    try:
        ref = next(r for r in required(repo) if (r.chart, r.version) == (chart, version))
    except StopIteration:
        raise ChartError(
            f"chart {chart} {version}: no HelmRelease or Application of any environment installs it"
        ) from None
    return ensure(repo, ref, online=online)


def ensure_all(
    repo: Repo, envs: list[str] | None = None, online: bool = True
) -> tuple[list[Path], list[str]]:
    """Every chart the manifests name, cached; and one message per chart that could not be."""
    cached: list[Path] = []
    errors: list[str] = []
    for ref in required(repo, envs):
        try:
            cached.append(ensure(repo, ref, online=online))
        except ChartError as exc:
            errors.append(str(exc))
    return cached, errors


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fill the upstream chart cache (.cache/charts).")
    parser.add_argument("--env", action="append", help="environment (default: all)")
    args = parser.parse_args(argv)
    repo = repo or Repo.discover()
    try:
        cached, errors = ensure_all(repo, args.env)
    except RenderError as exc:
        errors = [str(exc)]
        cached = []
    for path in cached:
        origin = json.loads(_stamp(path).read_text())["origin"]
        print(f"{path.parent.name} {path.name}: {repo.rel(path)} (from {origin})")
    for err in errors:
        print(f"error: {err}", file=sys.stderr)
    if errors:
        return 1
    print(f"{len(cached)} upstream charts cached and verified in {repo.rel(cache_dir(repo))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
