"""The rollout under load's traffic: requests routed by the Knative Service's declared split,
and answers told apart by version (kserve_gitops.e2e.reliability's rollout scenario)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from tabulate import tabulate

from kserve_gitops.controllers.canary import Split
from kserve_gitops.e2e import traffic
from kserve_gitops.e2e.paths import ClusterPaths, PathError
from kserve_gitops.lifecycle.registry import Registry
from kserve_gitops.serving import client


def version_rows(reg: Registry, first: tuple[float, ...]) -> tuple[tuple[float, ...], ...]:
    """`first`, then the first Iris row (scikit-learn's bundled copy) on which the registered
    versions do not all agree: its prediction tells which version answered. The golden set
    cannot: every version must predict it right (the gate)."""
    import joblib
    from sklearn.datasets import load_iris

    models = [joblib.load(v.artifact) for v in reg.versions().values()]
    data = load_iris().data
    answers = [m.predict(data) for m in models]
    differ = next((i for i in range(len(data)) if len({int(a[i]) for a in answers}) > 1), None)
    if differ is None:
        raise PathError(f"{reg.model}: the registered versions agree on every Iris row")
    return (first, tuple(float(x) for x in data[differ]))


def version_answers(reg: Registry, rows: client.Rows) -> dict[tuple[int, ...], str]:
    """Each version's answer to `rows`, as the server gives it: answer -> version."""
    import joblib

    return {
        tuple(int(c) for c in joblib.load(v.artifact).predict([list(r) for r in rows])): name
        for name, v in reg.versions().items()
    }


@dataclass
class Router:
    """Sends request i to a revision by the Knative Service's declared split (status.traffic),
    as the ingress would: the Istio gateway that splits by weight cannot be built here, so the
    split is this router's, following each split the rollout reports. Requests go to each
    revision's public Service, where Knative's activator holds them while it has no pod."""

    paths: ClusterPaths
    namespace: str
    split: tuple[tuple[str, int], ...] = ()
    targets: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)

    def follow(self, split: Split) -> None:
        for rev, _ in split.traffic:
            if rev not in self.targets:
                self.targets[rev] = self.paths.revision_target(rev, self.namespace)
        self.split = tuple((r, p) for r, p in split.traffic if p > 0)

    def __call__(self, i: int) -> tuple[str, dict[str, str], str]:
        slot = (i * 7) % 100  # 7 is prime to 100: each revision's share spread over the 100
        bounds = itertools.accumulate(p for _, p in self.split)
        rev = next(
            (r for (r, _), b in zip(self.split, bounds, strict=True) if slot < b), self.split[-1][0]
        )
        url, headers = self.targets[rev]
        return url, headers, rev


def mixed_revisions(
    outcomes: list[traffic.Outcome], versions: dict[tuple[int, ...], str]
) -> list[str]:
    """A revision that answered with more than one version: the answers were not its own."""
    seen: dict[str, set[str]] = {}
    for o in outcomes:
        if o.ok and o.answer in versions:
            seen.setdefault(o.target, set()).add(versions[o.answer])
    return [
        f"revision {rev} answered as {', '.join(sorted(v))}"
        for rev, v in seen.items()
        if len(v) > 1
    ]


def stage_table(
    outcomes: list[traffic.Outcome],
    stages: list[tuple[float, str, Split]],
    versions: dict[tuple[int, ...], str],
) -> str:
    """Per stage of the rollout (from its split being seen to the next's): the declared split,
    requests sent, failed, and the answers by version."""
    rows = []
    for n, (start, stage, split) in enumerate(stages):
        stop = stages[n + 1][0] if n + 1 < len(stages) else float("inf")
        inside = [o for o in outcomes if start <= o.due_s < stop]
        by_version: dict[str, int] = {}
        for o in inside:
            if o.ok:
                name = versions.get(o.answer or (), "other")
                by_version[name] = by_version.get(name, 0) + 1
        answered = ", ".join(f"{v} {c}" for v, c in sorted(by_version.items())) or "-"
        shares = ", ".join(f"{r} {p}%" for r, p in split.traffic)
        rows.append([stage, shares, len(inside), sum(not o.ok for o in inside), answered])
    head = ["stage", "declared split", "sent", "failed", "answers by version"]
    return tabulate(rows, head, tablefmt="github")
