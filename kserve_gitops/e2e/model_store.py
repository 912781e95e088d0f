"""The model onto its claim: the trained artifacts of models/<model>/ copied onto the
PersistentVolumeClaim the environment's storageUri names, through the short-lived loader pod of
e2e/model-store/, before the InferenceService that reads them is installed."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kserve_gitops.e2e.steps import Apply, Run, Step, ref
from kserve_gitops.repo import Repo, render
from kserve_gitops.repo.render import RenderError


def storage(values: Mapping[str, Any], source: str) -> tuple[str, str]:
    uri = str((values.get("model") or {}).get("storageUri", ""))
    claim, _, sub = uri.removeprefix("pvc://").partition("/")
    if not uri.startswith("pvc://") or not claim or not sub:
        raise RenderError(
            f"{source}: model.storageUri: the e2e delivers the model on a PVC and expects "
            f"pvc://<claim>/<path>, got {uri!r}"
        )
    return claim, sub.strip("/")


def model_store(
    repo: Repo,
    env: str,
    model: str,
    namespace: str,
    values: Mapping[str, Any],
    source: str,
    declared: set[str],
    claims: set[str],
) -> list[Step]:
    """Put the trained model on the claim the storageUri names, through a short-lived pod, in
    the namespace a platform layer declares (`declared`: namespaces applied before). The claim
    is the environment's own (`claims`: the ones its layers applied), never the e2e's."""
    loader = repo.e2e / "model-store"
    objs = render.kustomize_build(repo, loader)
    where = f"kustomize build {repo.rel(loader)}"
    claim, sub = storage(values, source)
    pods = [o for o in objs if o.get("kind") == "Pod"]
    if [o["kind"] for o in objs] != ["Pod"]:
        raise RenderError(f"{where}: expected only the loader Pod (the claim is the environment's)")
    if claim not in claims:
        raise RenderError(
            f"{source}: model.storageUri: no layer of clusters/{env} declares "
            f"PersistentVolumeClaim {claim!r}; the e2e creates no claim of its own"
        )
    wrong = [ref(o) for o in objs if o["metadata"].get("namespace") != namespace]
    if wrong:
        raise RenderError(
            f"{where}: {', '.join(wrong)}: not in namespace {namespace!r} "
            f"(the namespace of HelmRelease {model} in clusters/{env})"
        )
    if namespace not in declared:
        raise RenderError(
            f"clusters/{env}: no platform layer declares Namespace {namespace!r} (HelmRelease "
            f"{model}'s); the e2e creates no namespace of its own"
        )
    pod = pods[0]["metadata"]["name"]
    container = pods[0]["spec"]["containers"][0]
    mount = next(
        m["mountPath"]
        for m in container["volumeMounts"]
        if m["name"] == _claim_volume(pods[0], claim)
    )
    # Every trained version goes on the claim beside the served one, so a canary
    # (`make canary VERSION=v2`, storageUri .../v2) can run in a kept cluster.
    served = repo.models / model / sub / "model.joblib"
    artifacts = sorted({served, *(repo.models / model).glob("v*/model.joblib")})
    kexec = ("kubectl", "exec", "-n", namespace, pod, "-c", container["name"], "--")
    copies: list[Step] = []
    for artifact in artifacts:
        target = f"{mount}/{Path(sub).parent / artifact.parent.name}".replace("/./", "/")
        copies += [
            Run("model", f"create {target} on the claim", (*kexec, "mkdir", "-p", target)),
            Run(
                "model",
                f"copy {repo.rel(artifact)} onto the claim",
                (
                    "kubectl",
                    "cp",
                    repo.rel(artifact),
                    f"{namespace}/{pod}:{target}/model.joblib",
                    "-c",
                    container["name"],
                ),
            ),
            Run(
                "model",
                f"check: {target}/model.joblib is on the claim",
                (*kexec, "ls", "-l", f"{target}/model.joblib"),
            ),
        ]
    return [
        Apply("model", f"apply the e2e model loader (mounts claim {claim})", where, tuple(objs)),
        Run(
            "model",
            f"wait: pod {pod} Ready (claim {claim} bound)",
            (
                "kubectl",
                "wait",
                "--for=condition=Ready",
                f"pod/{pod}",
                "-n",
                namespace,
                "--timeout=300s",
            ),
            330,
        ),
        *copies,
        Run(
            "model",
            f"delete pod {pod} (the claim keeps the model)",
            ("kubectl", "delete", "pod", pod, "-n", namespace, "--wait=true", "--timeout=120s"),
        ),
    ]


def _claim_volume(pod: Mapping[str, Any], claim: str) -> str:
    for vol in pod["spec"].get("volumes") or []:
        if (vol.get("persistentVolumeClaim") or {}).get("claimName") == claim:
            return str(vol["name"])
    raise RenderError(f"e2e/model-store: the loader pod does not mount claim {claim!r}")
