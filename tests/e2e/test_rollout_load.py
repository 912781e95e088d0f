"""The rollout scenario's routing by the declared split and its counting by version."""

from __future__ import annotations

import itertools

from kserve_gitops.controllers.canary import Split
from kserve_gitops.e2e import rollout_load, traffic
from kserve_gitops.lifecycle import registry
from tests import REPO


class Services:
    """Each revision's public Service as ClusterPaths gives it (no cluster needed)."""

    def revision_target(self, rev: str, namespace: str) -> tuple[str, dict[str, str]]:
        return f"http://{rev}", {"Knative-Serving-Revision": rev}


def test_router_follows_the_declared_split_exactly_and_spread_out() -> None:
    router = rollout_load.Router(Services(), "models")  # type: ignore[arg-type]
    router.follow(Split("r2", (("r1", 90), ("r2", 10))))
    targets = [router(i)[2] for i in range(200)]
    assert targets.count("r2") == 20  # 10% of every 100 requests
    canary = [i for i, t in enumerate(targets) if t == "r2"]
    gaps = [b - a for a, b in itertools.pairwise(canary)]
    assert max(gaps) < 30  # not ten in a row, then ninety
    assert router(3)[:2] == Services().revision_target(router(3)[2], "models")
    # A revision at 0% gets nothing; the next split is followed at once.
    router.follow(Split("r3", (("r1", 100), ("r3", 0))))
    assert {router(i)[2] for i in range(100)} == {"r1"}


def test_versions_are_told_apart_by_a_row_they_disagree_on() -> None:
    reg = registry.load(REPO, "sklearn-iris")
    rows = rollout_load.version_rows(reg, (5.1, 3.5, 1.4, 0.2))
    answers = rollout_load.version_answers(reg, rows)
    assert rows[0] == (5.1, 3.5, 1.4, 0.2)
    assert sorted(answers.values()) == sorted(reg.versions())  # one answer per version
    assert len({a[0] for a in answers}) == 1  # the golden row: every version agrees


def test_stage_table_and_a_revision_answering_as_two_versions() -> None:
    versions = {(0, 2): "v1", (0, 1): "v2"}
    outcomes = [
        traffic.Outcome(0.5, 0.01, 200, (0, 2), target="r1"),
        traffic.Outcome(5.0, 0.01, 200, (0, 2), target="r1"),
        traffic.Outcome(5.5, 0.01, 200, (0, 1), target="r2"),
        traffic.Outcome(6.0, None, 503, None, "unavailable", target="r2"),
    ]
    stages = [
        (0.0, "before", Split("r1", (("r1", 100),))),
        (4.0, "canary v2 10%", Split("r2", (("r1", 90), ("r2", 10)))),
    ]
    table = rollout_load.stage_table(outcomes, stages, versions)
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert rows[0] == ["before", "r1 100%", "1", "0", "v1 1"]
    assert rows[1] == ["canary v2 10%", "r1 90%, r2 10%", "3", "1", "v1 1, v2 1"]
    assert rollout_load.mixed_revisions(outcomes, versions) == []
    outcomes.append(traffic.Outcome(7.0, 0.01, 200, (0, 2), target="r2"))
    assert rollout_load.mixed_revisions(outcomes, versions) == ["revision r2 answered as v1, v2"]
