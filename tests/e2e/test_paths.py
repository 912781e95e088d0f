"""The cluster paths' reading of live objects (ClusterPaths.get over a stand-in runner); the
paths themselves are opened on the real node in `make e2e CLUSTER=node`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kserve_gitops.e2e.paths import ClusterPaths


def _pod(name: str, ready: bool, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-07T21:27:10Z"
    status = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return {"metadata": meta, "status": status}


class Runner:
    """Answers `kubectl get pods ... -o json` with fixed pods and records the command."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.commands: list[list[str]] = []

    def run(self, cmd: list[str], **_: Any) -> str:
        self.commands.append(cmd)
        return json.dumps({"items": self.pods})


def test_ready_pods_leave_out_a_pod_being_scaled_away(tmp_path: Path) -> None:
    runner = Runner([_pod("a", True), _pod("b", True, deleting=True), _pod("c", False)])
    paths = ClusterPaths(runner, tmp_path, print)  # type: ignore[arg-type]
    # b is still Ready while its containers stop, but a scenario must not pick it.
    assert paths.ready_pods("models", "rev-1") == ["a"]
    assert "serving.knative.dev/revision=rev-1" in runner.commands[0]
