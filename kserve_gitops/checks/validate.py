"""`make validate` (`kgops validate`): render everything the repository deploys and check it all
strictly, reporting every problem (file, field, what was expected) before the non-zero exit:

- the pinned CRDs, by checksum (config/crds.tsv);
- our config files against their yamale schemas (schemas/), and the promotion order;
- each chart: `helm lint --strict` and a render of every ci/*-values.yaml scenario;
- each environment: its models from their values files, and the Applications Argo CD's
  ApplicationSet generates;
- every kustomization's build;
- the values files of upstream charts (values schema, strict render, keys with no effect);
- every object above against the strict schema of its kind (upstream/kube_schemas.py), at the
  Kubernetes version versions.yaml pins;
- that versions.yaml, Flux and Argo CD agree per environment (platform_consistency.py);
- the security policies and the credential scan (policy.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yamale
from tabulate import tabulate

from kserve_gitops.checks import platform_consistency, policy
from kserve_gitops.repo import Repo, RepoError, argocd, render
from kserve_gitops.repo.render import Obj, RenderError
from kserve_gitops.upstream import crds, kube_schemas
from kserve_gitops.upstream import values as upstream_values

# Repository config files and the yamale schema each must satisfy.
CONFIG_SCHEMAS: tuple[tuple[str, str], ...] = (
    ("versions.yaml", "versions.yaml"),
    ("environments/*/environment.yaml", "environment.yaml"),
    ("config/slo.yaml", "slo.yaml"),
    ("models/*/train.yaml", "train.yaml"),
    ("models/*/registry.yaml", "registry.yaml"),
    ("config/canary.yaml", "canary.yaml"),
)


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    checked: dict[str, Counter[str]] = field(default_factory=dict)
    files: int = 0
    seen: set[tuple[str, str]] = field(default_factory=set)
    not_run: list[str] = field(default_factory=list)  # checks skipped: never reported as passed

    def first_sight(self, group: str, obj: Obj) -> bool:
        """An overlay's build repeats its layers' objects: check and count each one once."""
        key = (group, json.dumps(obj.body, sort_keys=True))
        if key in self.seen:
            return False
        self.seen.add(key)
        self.checked.setdefault(group, Counter())[obj.kind] += 1
        return True


def check_config_files(repo: Repo, report: Report) -> None:
    """Our own config files against their yamale schemas (CONFIG_SCHEMAS)."""
    for pattern, schema_name in CONFIG_SCHEMAS:
        schema_path = repo.schemas / schema_name
        for path in sorted(repo.root.glob(pattern)):
            report.files += 1
            if not schema_path.is_file():
                report.errors.append(f"{repo.rel(path)}: no yamale schema schemas/{schema_name}")
                continue
            try:
                schema = yamale.make_schema(str(schema_path))
                yamale.validate(schema, yamale.make_data(str(path)))
            except yamale.YamaleError as exc:
                for result in exc.results:
                    report.errors += [f"{repo.rel(path)}: {e}" for e in result.errors]
            except Exception as exc:  # yamale raises plain parser errors for malformed YAML
                report.errors.append(f"{repo.rel(path)}: {exc}")


def check_promotion_order(repo: Repo, report: Report) -> list[str]:
    """The environments in promotion order (environments/*/environment.yaml promotesTo); a
    broken chain is an error, and the checks go on over the environments found."""
    try:
        return list(repo.environment_names)
    except RepoError as exc:
        report.errors.append(str(exc))
        return list(repo.declared_environments)


def check_objects(
    repo: Repo,
    report: Report,
    group: str,
    objs: list[Obj],
    extra: kube_schemas.CrdSchemas | None = None,
) -> None:
    for obj in objs:
        if not report.first_sight(group, obj):
            continue
        try:
            violations = kube_schemas.check(repo, obj.body, extra)
        except kube_schemas.SchemaNotFound as exc:
            report.errors.append(f"{obj.source}: {obj.ref}: {exc}")
            continue
        report.errors += [f"{obj.source}: {obj.ref}: {v}" for v in violations]


def check_chart(repo: Repo, report: Report, chart_dir: Path) -> None:
    """helm lint and a strict render of every ci/*-values.yaml scenario (as chart-testing does:
    a chart may require values, such as a model's storageUri, that have no sane default)."""
    import helm_python as helm

    kube_version = f"v{repo.kubernetes_version}"  # the cluster's, from versions.yaml
    scenarios = sorted((chart_dir / "ci").glob("*-values.yaml"))
    if not scenarios:
        report.errors.append(f"{repo.rel(chart_dir)}/ci/: no *-values.yaml scenario")
    group = f"chart {chart_dir.name}"
    for scenario in scenarios:
        source = repo.rel(scenario)
        try:
            values = render.model_values(repo, scenario)
        except RenderError as exc:
            report.errors.append(str(exc))
            continue
        lint = helm.lint(chart_dir, values, strict=True, kube_version=kube_version)
        for msg in lint.get("messages") or []:
            if msg.get("severity", 0) >= 2:
                report.errors.append(f"{source}: helm lint: {msg.get('path')}: {msg.get('error')}")
        try:
            objs = render.render_chart(repo, chart_dir, values, chart_dir.name, "default", source)
        except RenderError as exc:
            report.errors.append(str(exc))
            continue
        check_objects(repo, report, group, objs)


def _group_of(repo: Repo, path: Path, envs: list[str]) -> str:
    """The environment a kustomization belongs to, else its top-level directory (shared bases)."""
    parts = Path(repo.rel(path)).parts
    return next((p for p in parts if p in envs), f"{parts[0]} (shared)")


def check_kustomizations(repo: Repo, report: Report, dirs: list[Path], envs: list[str]) -> None:
    def build(d: Path) -> tuple[Path, list[dict[str, Any]] | str]:
        try:
            return d, render.kustomize_build(repo, d)
        except RenderError as exc:
            return d, str(exc)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for d, built in pool.map(build, dirs):
            if isinstance(built, str):
                report.errors.append(built)
                continue
            source = f"kustomize build {repo.rel(d)}"
            objs = [Obj(source, body) for body in built]
            check_objects(repo, report, _group_of(repo, d, envs), objs)


def check_environment(repo: Repo, report: Report, env: str) -> None:
    """The models from their values files, and the Applications Argo CD's ApplicationSet
    would generate (its CRD does not check the template it embeds)."""
    for produce in (render.render_models, _argocd_applications):
        try:
            objs = produce(repo, env)
        except RenderError as exc:
            report.errors.append(str(exc))
            continue
        check_objects(repo, report, env, objs)


def check_upstream_values(repo: Repo, report: Report, envs: list[str]) -> None:
    """The values files passed to upstream charts (kserve_gitops/upstream/values.py), from the
    chart cache. A chart not cached leaves its checks not run: said so, and an error in CI."""
    outcome = upstream_values.check_environments(repo, envs)
    report.errors += outcome.problems
    check_objects(repo, report, "upstream charts", outcome.objects, outcome.crd_schemas)
    if outcome.missing and os.environ.get("CI"):
        report.errors += outcome.missing.values()
    elif outcome.missing:
        report.not_run.append(
            "values files of upstream charts (values schema, strict render, no-effect keys): "
            f"{', '.join(outcome.missing)} not in .cache/charts; run `make charts` online, or "
            "set CHART_DIR to a folder of charts (CI uses ../shared/charts)"
        )


def _argocd_applications(repo: Repo, env: str) -> list[Obj]:
    return [Obj(f"argocd/{env} ApplicationSet", app) for app in argocd.generated(repo, env)]


def run(repo: Repo, progress: Callable[[str], None]) -> Report:
    report = Report()
    progress("CRDs: checking the pinned cache")
    crds.ensure(repo)
    progress("config files: yamale schemas")
    check_config_files(repo, report)
    for chart_dir in sorted(p.parent for p in repo.charts.glob("*/Chart.yaml")):
        progress(f"chart {chart_dir.name}: helm lint, values schema, render")
        check_chart(repo, report, chart_dir)
    envs = check_promotion_order(repo, report)
    for env in envs:
        progress(f"environment {env}: models and generated Argo CD Applications")
        check_environment(repo, report, env)
    # Deepest first: an object is reported from the smallest kustomization that declares it.
    dirs = sorted(render.kustomization_dirs(repo), key=lambda d: (-len(d.parts), d))
    progress(f"kustomizations: {len(dirs)} directories")
    check_kustomizations(repo, report, dirs, envs)
    progress("upstream charts: values schema, strict render, values with no effect")
    check_upstream_values(repo, report, envs)
    progress("consistency: versions.yaml, Flux and Argo CD agree per environment")
    report.errors += platform_consistency.problems(repo, envs)
    progress("security policies (kserve_gitops/checks/policy.py) and the credential scan")
    report.errors += policy.problems(repo, envs)
    return report


def print_summary(report: Report, seconds: float) -> None:
    total = sum(sum(c.values()) for c in report.checked.values())
    print(f"\nchecked {total} objects and {report.files} config files in {seconds:.1f}s")
    rows = [
        (
            group,
            sum(counts.values()),
            ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())),
        )
        for group, counts in sorted(report.checked.items())
    ]
    print(textwrap.indent(tabulate(rows, tablefmt="plain"), "  "))


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    repo = repo or Repo.discover()
    started = time.monotonic()
    progress = (lambda _m: None) if args.quiet else (lambda m: print(f"> {m}", flush=True))
    try:
        report = run(repo, progress)
    except (crds.CRDError, RenderError, RepoError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_summary(report, time.monotonic() - started)
    for skipped in report.not_run:
        print(f"\nNOT RUN (not passed): {skipped}")
    if report.errors:
        print(f"\n{len(report.errors)} error(s):", file=sys.stderr)
        for err in report.errors:
            print(f"  - {err}", file=sys.stderr)
        return 1
    print("validation passed" + (" (with checks NOT RUN, see above)" if report.not_run else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
