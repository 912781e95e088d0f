"""Bad input on the real node (a control plane with kwok's fake nodes and one real node:
kubelet, containerd, runc), each a pod the kubelet must refuse or report, with an error that
names the pod, the container and the kubelet's or runtime's reason; nothing may be left running
after each test. Needs root and the binaries and images `make node-binaries images` build."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from kserve_gitops.base.tools import Runner
from kserve_gitops.e2e.provider import KwokCluster, run_env
from kserve_gitops.localcluster import binaries, controlplane
from kserve_gitops.node import binaries as node_binaries
from kserve_gitops.node import diagnose, images
from kserve_gitops.node.config import NODE_LABEL, NODE_VALUE, TOLERATION
from kserve_gitops.node.realnode import NodeError
from tests import REPO
from tests.kwok_helpers import need_binaries

pytestmark = pytest.mark.node
NS = "bad-input"
ROOT_REF = "dev.local/kserve-gitops/pause-as-root:test"


def root_image(pause: Path, dest: Path) -> Path:
    """The pause image with its config's user set to root (0): an OCI archive with one new
    config blob, manifest and index, the layers shared."""
    with tarfile.open(pause) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    index = json.loads(members["index.json"])
    manifest_digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads(members[f"blobs/sha256/{manifest_digest}"])
    cfg = json.loads(members[f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"])
    cfg["config"]["User"] = "0"

    def blob(obj: Any) -> tuple[str, bytes]:
        data = json.dumps(obj).encode()
        return hashlib.sha256(data).hexdigest(), data

    cfg_digest, cfg_data = blob(cfg)
    manifest["config"] = {
        **manifest["config"],
        "digest": f"sha256:{cfg_digest}",
        "size": len(cfg_data),
    }
    man_digest, man_data = blob(manifest)
    entry = {**index["manifests"][0], "digest": f"sha256:{man_digest}", "size": len(man_data)}
    entry["annotations"] = {
        "io.containerd.image.name": ROOT_REF,
        "org.opencontainers.image.ref.name": ROOT_REF.rsplit(":", 1)[1],
    }
    members |= {
        f"blobs/sha256/{cfg_digest}": cfg_data,
        f"blobs/sha256/{man_digest}": man_data,
        "index.json": json.dumps({**index, "manifests": [entry]}).encode(),
    }
    with tarfile.open(dest, "w") as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dest


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KwokCluster, Path]]:
    plane = [b for b in binaries.pinned(REPO) if b.name != "helm"]  # no chart is installed
    need_binaries(
        lambda: binaries.locate(plane),
        lambda: binaries.locate(node_binaries.pinned(REPO)),
        lambda: images.locate(REPO, ["pause", "coredns", "sklearnserver"]),
        root=True,
    )
    report = tmp_path_factory.mktemp("node-bad-input")
    lines: list[str] = []
    cluster = KwokCluster(REPO, "badinput", lines.append, real_node=True)
    # The control plane and the node only: no controller runs in this module.
    bins = cluster.bins = binaries.locate(plane)
    cluster.node_bins = binaries.locate(node_binaries.pinned(REPO))
    extra = root_image(images.locate(REPO, ["pause"])["pause"], report / "root.oci.tar")
    cluster.archives = {**images.locate(REPO, ["pause", "coredns", "sklearnserver"]), "root": extra}
    kubeconfig = controlplane.kubeconfig_file(REPO, "badinput")
    runner = Runner(report / "commands.log", lines.append, run_env(kubeconfig, bins), REPO.root)
    try:
        cluster.start(runner)
        runner.run(["kubectl", "create", "namespace", NS], timeout=30)
        yield cluster, kubeconfig
    finally:
        cluster.stop(keep=False)
        assert not [line for line in cluster.node_undone if "NOT restored" in line], lines


def pod(name: str, image: str, **container: Any) -> dict[str, Any]:
    security = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "nodeSelector": {NODE_LABEL: NODE_VALUE},
            "tolerations": [TOLERATION],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 1,
            "securityContext": security,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    **container,
                }
            ],
        },
    }


def run_bad(
    node: tuple[KwokCluster, Path], body: dict[str, Any], timeout_s: float = 240
) -> diagnose.Failure:
    """Create the pod, wait for the kubelet's verdict, delete it and check that no container
    of it is left in containerd."""
    cluster, kubeconfig = node
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    name = body["metadata"]["name"]
    core.create_namespaced_pod(NS, body)
    try:
        return diagnose.wait_failure(core, NS, name, timeout_s)
    finally:
        core.delete_namespaced_pod(name, NS, grace_period_seconds=0)
        assert cluster.node is not None
        deadline = time.monotonic() + 120
        while True:
            ids = cluster.node.ctr("containers", "list", "-q").split()
            left = [c for c in ids if _of_pod(cluster, c, name)]
            if not left:
                break
            assert time.monotonic() < deadline, f"containers of pod {name} left: {left}"
            time.sleep(1)


def _of_pod(cluster: KwokCluster, container: str, pod_name: str) -> bool:
    assert cluster.node is not None
    try:
        info = json.loads(cluster.node.ctr("containers", "info", container))
    except NodeError:  # removed between the listing and this look
        return False
    return (info.get("Labels") or {}).get("io.kubernetes.pod.name") == pod_name


def test_root_image_under_run_as_non_root(node: tuple[KwokCluster, Path]) -> None:
    found = run_bad(node, pod("root-user", ROOT_REF))
    print(found)  # the message a user sees, in the test report
    assert (found.pod, found.container) == (f"{NS}/root-user", "main")
    assert found.reason == "CreateContainerConfigError"
    assert "runAsNonRoot" in found.detail and "root" in found.detail


def test_model_that_does_not_load(node: tuple[KwokCluster, Path], tmp_path: Path) -> None:
    refs = images.refs(REPO)
    body = pod(
        "bad-model",
        refs["sklearnserver"],
        args=["--model_name=bad", "--model_dir=/mnt/models"],
        volumeMounts=[{"name": "models", "mountPath": "/mnt/models"}],
    )
    models = tmp_path / "models"
    models.mkdir()
    (models / "model.joblib").write_bytes(b"not a pickle")
    os.chmod(models, 0o755)
    os.chmod(models / "model.joblib", 0o644)
    body["spec"]["volumes"] = [{"name": "models", "hostPath": {"path": str(models)}}]
    found = run_bad(node, body)
    print(found)  # the message a user sees, in the test report
    assert (found.pod, found.container) == (f"{NS}/bad-model", "main")
    assert found.reason in ("Error", "CrashLoopBackOff")
    assert "exit code" in found.detail or "back-off" in found.detail


def test_memory_limit_below_the_runtime(node: tuple[KwokCluster, Path]) -> None:
    refs = images.refs(REPO)
    body = pod(
        "tiny-memory",
        refs["sklearnserver"],
        args=["--model_name=tiny", "--model_dir=/tmp"],
        resources={"limits": {"memory": "16Mi", "cpu": "200m"}},
    )
    found = run_bad(node, body)
    print(found)  # the message a user sees, in the test report
    assert (found.pod, found.container, found.reason) == (f"{NS}/tiny-memory", "main", "OOMKilled")


def test_image_not_present_locally(node: tuple[KwokCluster, Path]) -> None:
    found = run_bad(node, pod("absent-image", "dev.local/kserve-gitops/absent:v0"))
    print(found)  # the message a user sees, in the test report
    assert (found.pod, found.container) == (f"{NS}/absent-image", "main")
    assert found.reason in ("ErrImagePull", "ImagePullBackOff")
    assert "absent" in found.detail
