"""GitOps behaviour of Flux's own controllers on a kwok cluster, with a throwaway copy of this
repository served by the local Git server: Flux delivers dev's models layer (the HelmRelease of
our chart, its values ConfigMap generated from environments/dev/models/sklearn-iris.yaml), and
then each test changes the cluster or the served branch and watches Flux react:

- a new commit on the branch is picked up and rolled out;
- a commit with a broken values file leaves the HelmRelease not Ready with Helm's message, the
  previous release deployed and its objects in place;
- a managed object edited by hand is restored (drift corrected);
- an object deleted from Git is deleted from the cluster (pruning).

Marked kwok: skipped without the binaries (`make binaries DELIVERY=flux`), except under CI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kserve_gitops.base.tools import CommandError
from kserve_gitops.delivery import flux, overlay, reconciliation, sources
from kserve_gitops.e2e.delivery import FluxCluster
from kserve_gitops.localcluster import binaries
from kserve_gitops.upstream import crds
from tests import REPO
from tests.kwok_helpers import need_binaries

pytestmark = pytest.mark.kwok

INTERVAL = "10s"
MODELS = Path("environments/dev/models")
VALUES = MODELS / "sklearn-iris.yaml"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FluxCluster]:
    """dev's GitRepository and models Kustomization as clusters/dev declares them, minus the
    dependsOn on layers this cluster does not have, at a short interval, and with the Flux e2e's
    patch that drops the HelmReleases' health expressions (no KServe controller runs here to set
    an InferenceService's Ready); the InferenceService CRD from the CRD cache."""
    need_binaries(
        lambda: binaries.locate(binaries.pinned(REPO)),
        lambda: binaries.locate([*binaries.flux_pinned(REPO), binaries.oci_registry(REPO)]),
    )
    report = tmp_path_factory.mktemp("flux-gitops")
    lines: list[str] = []
    fc = FluxCluster(
        REPO,
        "flux-behaviour",
        REPO.cache / "flux" / "behaviour",
        lines.append,
        report / "commands.log",
    )
    try:
        fc.start()
        fc.serve_git()
        crd = next(
            p for p in crds.ensure(REPO) if p.name == "serving.kserve.io_inferenceservices.yaml"
        )
        fc.runner.run(["kubectl", "apply", "--server-side", "-f", str(crd)], timeout=120)
        top = overlay.entry_objects(REPO, "dev")
        repo = next(o for o in top if o["kind"] == "GitRepository")
        repo["spec"] |= {"url": fc.git_url, "interval": INTERVAL}
        models = next(o for o in top if reconciliation.key(o) == "Kustomization/models")
        models["spec"].pop("dependsOn", None)
        models["spec"] |= {"interval": INTERVAL, "retryInterval": INTERVAL, "timeout": "2m"}
        patches = models["spec"].get("patches") or []
        models["spec"]["patches"] = [*patches, overlay.NO_HEALTH_CHECK_EXPRS]
        manifest = report / "flux.yaml"
        manifest.write_text(yaml.safe_dump_all([repo, models]))
        fc.runner.run(["kubectl", "apply", "-f", str(manifest)], timeout=60)
        wait(fc, lambda: ready(fc, "kustomization", "models")[0] == "True", "models Ready")
        wait(fc, lambda: ready(fc, "helmrelease", "sklearn-iris")[0] == "True", "release Ready")
        yield fc
    finally:
        fc.stop()
        (report / "progress.txt").write_text("\n".join(lines) + "\n")


def get(fc: FluxCluster, kind: str, name: str, ns: str = flux.NAMESPACE) -> dict[str, Any]:
    out = fc.runner.run(["kubectl", "get", kind, name, "-n", ns, "-o", "json"], quiet=True)
    return json.loads(out)


def ready(fc: FluxCluster, kind: str, name: str) -> tuple[str, str]:
    try:
        return reconciliation.ready(get(fc, kind, name))
    except CommandError:
        return "absent", ""


def wait(fc: FluxCluster, done: Callable[[], bool], what: str, timeout_s: float = 300) -> float:
    """Seconds until `done()`; fails naming `what` and the Flux objects' Ready messages."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        fc.tick()
        if done():
            return time.monotonic() - started
        time.sleep(1)
    state = {
        n: ready(fc, k, n)
        for k, n in (("kustomization", "models"), ("helmrelease", "sklearn-iris"))
    }
    pytest.fail(f"{what}: not after {timeout_s:.0f}s; {state}")


def commit(fc: FluxCluster, message: str, edit: Callable[[Path], None]) -> str:
    edit(fc.work)
    return sources.publish(fc.work, message)


def failed_and_settled(fc: FluxCluster, kind: str, name: str) -> bool:
    """Ready False with an outcome: while helm-controller runs an action, Ready is False too,
    with reason Progressing and Reconciling's message ("Running 'upgrade' action ...")."""
    conditions = (get(fc, kind, name).get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), {})
    return ready.get("status") == "False" and not str(ready.get("reason")).startswith("Progressing")


def applied(fc: FluxCluster, revision: str, field: str = "lastAppliedRevision") -> bool:
    """Whether Flux applied `revision` (lastAppliedRevision: applied and healthy;
    lastAttemptedRevision: applied, whatever the health checks said)."""
    status = get(fc, "kustomization", "models").get("status") or {}
    return str(status.get(field, "")).endswith(revision)


def isvc(fc: FluxCluster) -> dict[str, Any]:
    return get(fc, "inferenceservice", "sklearn-iris", "models")


def set_value(path: Path, dotted: str, value: Any) -> None:
    data = yaml.safe_load(path.read_text())
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def deployed(fc: FluxCluster) -> tuple[str, str]:
    """(values, manifest) of the release Helm has deployed now. dev's HelmRelease builds the
    chart at every Git revision (reconcileStrategy: Revision), and the chart puts no version
    in the manifest, so a commit that changes nothing else leaves the manifest as it was."""
    base = ["sklearn-iris", "-n", "models"]
    values = fc.runner.run(["helm", "get", "values", *base, "-o", "json"], quiet=True)
    manifest = fc.runner.run(["helm", "get", "manifest", *base], quiet=True)
    return values, manifest


def test_new_commit_on_the_branch_is_rolled_out(cluster: FluxCluster) -> None:
    before = isvc(cluster)["spec"]["predictor"]["timeout"]
    rev = commit(
        cluster,
        "dev: predictor timeout 45s",
        lambda w: set_value(w / VALUES, "predictor.timeout", 45),
    )
    wait(cluster, lambda: applied(cluster, rev), f"models applied at {rev[:12]}")
    wait(
        cluster,
        lambda: isvc(cluster)["spec"]["predictor"]["timeout"] == 45,
        "timeout 45 rolled out",
    )
    assert before != 45
    assert ready(cluster, "helmrelease", "sklearn-iris")[0] == "True"


def test_broken_values_leave_the_previous_release_serving(cluster: FluxCluster) -> None:
    good = isvc(cluster)
    before = deployed(cluster)
    rev = commit(
        cluster,
        "dev: broken values",
        lambda w: set_value(w / VALUES, "predictor.minReplicas", "many"),
    )
    wait(
        cluster,
        lambda: applied(cluster, rev, "lastAttemptedRevision"),
        f"models attempted at {rev[:12]}",
    )
    wait(
        cluster,
        lambda: failed_and_settled(cluster, "helmrelease", "sklearn-iris"),
        "HelmRelease not Ready, with an outcome, after the broken commit",
    )
    _, message = ready(cluster, "helmrelease", "sklearn-iris")
    cluster.echo(f"HelmRelease/sklearn-iris after the broken commit: {message}")
    # Helm's own schema message, naming the chart's values.schema.json rule that failed.
    assert "minReplicas" in message and "schema" in message, message
    after = isvc(cluster)
    assert after["metadata"]["uid"] == good["metadata"]["uid"], "InferenceService was recreated"
    assert after["spec"] == good["spec"]
    # The deployed release is still the previous one: same values, same objects (a rollback
    # remediation may re-deploy it as a new revision; its content is what counts).
    assert deployed(cluster) == before
    # Fixing the file in Git makes the release Ready again.
    fixed = commit(
        cluster, "dev: fix values", lambda w: set_value(w / VALUES, "predictor.minReplicas", 0)
    )
    wait(cluster, lambda: applied(cluster, fixed), "fix applied")
    wait(cluster, lambda: ready(cluster, "helmrelease", "sklearn-iris")[0] == "True", "Ready again")


def test_drift_is_corrected(cluster: FluxCluster) -> None:
    hr = get(cluster, "helmrelease", "sklearn-iris")
    values_map = hr["spec"]["valuesFrom"][0]["name"]
    original = get(cluster, "configmap", values_map)["data"]["values.yaml"]
    cluster.runner.run(
        [
            "kubectl",
            "patch",
            "configmap",
            values_map,
            "-n",
            flux.NAMESPACE,
            "--type",
            "merge",
            "-p",
            json.dumps({"data": {"values.yaml": "edited: by hand\n"}}),
        ],
    )
    assert get(cluster, "configmap", values_map)["data"]["values.yaml"] == "edited: by hand\n"
    took = wait(
        cluster,
        lambda: get(cluster, "configmap", values_map)["data"]["values.yaml"] == original,
        "the hand edit reverted",
    )
    cluster.echo(f"hand edit of ConfigMap/{values_map} reverted after {took:.1f}s")


def test_object_deleted_from_git_is_pruned(cluster: FluxCluster) -> None:
    def drop_release(work: Path) -> None:
        kustomization = work / MODELS / "kustomization.yaml"
        data = yaml.safe_load(kustomization.read_text())
        # The HelmRelease lives in the base every environment shares: dev stops taking it.
        data["resources"].remove("../../base/models")
        data.pop("configMapGenerator")
        kustomization.write_text(yaml.safe_dump(data, sort_keys=False))

    rev = commit(cluster, "dev: retire sklearn-iris", drop_release)
    wait(cluster, lambda: applied(cluster, rev), f"models applied at {rev[:12]}")
    wait(
        cluster,
        lambda: ready(cluster, "helmrelease", "sklearn-iris")[0] == "absent",
        "HelmRelease pruned",
    )

    # helm-controller uninstalls a deleted HelmRelease: the release's objects go too.
    def isvc_gone() -> bool:
        try:
            isvc(cluster)
        except CommandError:
            return True
        return False

    wait(cluster, isvc_gone, "InferenceService removed with its release")
