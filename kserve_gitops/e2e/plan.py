"""The kind e2e as data: an ordered list of typed steps that `make e2e-plan` prints and
`make e2e` executes, so the plan the tests check is the run CI performs.

Versions and values come from the platform declarations (kserve_gitops.repo.flux, which
reads the Flux HelmReleases and versions.yaml); this module only adds what a throwaway kind
cluster needs on top (e2e/values/<release>.yaml) and the waits that tell one layer is ready for
the next.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kserve_gitops.repo import Repo, flux, paths, render
from kserve_gitops.repo.render import Obj, RenderError
from kserve_gitops.serving import client
from kserve_gitops.upstream import charts as upstream_charts
from kserve_gitops.upstream import crds

E2E = paths.ROOT / "e2e"
KIND_CONFIG = E2E / "kind-config.yaml"
MODEL_STORE = E2E / "model-store"
E2E_VALUES = E2E / "values"
MODEL = "sklearn-iris"
INGRESS_NODE_PORT = 31080
# The rows and answers the issue fixes; every protocol must give the same classes.
PREDICTIONS: tuple[tuple[tuple[tuple[float, ...], ...], tuple[int, ...]], ...] = (
    (((6.8, 2.8, 4.8, 1.4), (6.0, 3.4, 4.5, 1.6)), (1, 1)),
    (((5.1, 3.5, 1.4, 0.2),), (0,)),
)


# ---------------------------------------------------------------------------------------------
# Step types. Every step knows its layer (for ordering checks and progress lines), a title, and
# the exact commands it runs; the executor in kserve_gitops.e2e.run adds nothing but the running.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateCluster:
    """`kind create cluster`, writing its credentials to a kubeconfig of its own: every later
    command gets KUBECONFIG=that file, so the run can never act on another cluster."""

    layer: str
    name: str
    config: Path
    node_image: str
    kubeconfig: Path
    wait: str = "120s"

    @property
    def title(self) -> str:
        return f"create kind cluster {self.name}"

    def argv(self) -> list[str]:
        return [
            "kind", "create", "cluster", "--name", self.name, "--config", paths.rel(self.config),
            "--image", self.node_image, "--kubeconfig", paths.rel(self.kubeconfig),
            "--wait", self.wait,
        ]  # fmt: skip


@dataclass(frozen=True)
class HelmInstall:
    """`helm upgrade --install` of one release, values = declared values + e2e overrides.

    `values` is written to a temporary file (the plan prints it); `value_files` are passed as
    they are, as a user would pass them."""

    layer: str
    release: str
    chart: str
    repository: str | None  # https:// repo, oci:// registry, or None for a chart directory
    version: str | None
    namespace: str
    values: Mapping[str, Any] = field(default_factory=dict)
    values_source: str = ""
    value_files: tuple[Path, ...] = ()
    timeout: str = "10m"
    attempts: int = 1

    @property
    def title(self) -> str:
        where = f" {self.version}" if self.version else ""
        return f"helm install {self.release} ({self.chart}{where}) into {self.namespace}"

    def chart_args(self) -> list[str]:
        if self.repository is None:
            return [self.chart]
        if self.repository.startswith("oci://"):
            return [f"{self.repository.rstrip('/')}/{self.chart}"]
        return [self.chart, "--repo", self.repository]

    def argv(self, values_file: str | None) -> list[str]:
        argv = ["helm", "upgrade", "--install", self.release, *self.chart_args()]
        if self.version:
            argv += ["--version", self.version]
        argv += ["--namespace", self.namespace, "--create-namespace"]
        if values_file:
            argv += ["--values", values_file]
        for path in self.value_files:
            argv += ["--values", paths.rel(path)]
        return [*argv, "--wait", "--timeout", self.timeout]


@dataclass(frozen=True)
class Apply:
    """Server-side apply of objects that come from a build `make validate` checks."""

    layer: str
    title: str
    source: str
    objects: tuple[Mapping[str, Any], ...]

    def argv(self, manifest_file: str) -> list[str]:
        # Server-side: no last-applied annotation, so object size is never the limit. One field
        # manager per layer: a later apply can never drop the fields an earlier one set.
        return [
            "kubectl", "apply", "--server-side", "--force-conflicts",
            "--field-manager", f"kgops-e2e-{self.layer}", "-f", manifest_file,
        ]  # fmt: skip

    def refs(self) -> list[str]:
        return [ref(o) for o in self.objects]


@dataclass(frozen=True)
class Run:
    """One command that must succeed (kubectl wait, kubectl cp, ...)."""

    layer: str
    title: str
    command: tuple[str, ...]
    timeout_s: float = 600

    def argv(self) -> list[str]:
        return list(self.command)


@dataclass(frozen=True)
class Poll:
    """Repeat a command until it succeeds and its output passes `until` (a key of UNTIL): for
    states `kubectl wait` cannot express, e.g. a Service that has a ready endpoint."""

    layer: str
    title: str
    command: tuple[str, ...]
    until: str = "success"
    timeout_s: float = 300
    interval_s: float = 5
    stdin_objects: tuple[Mapping[str, Any], ...] = ()

    def argv(self) -> list[str]:
        return list(self.command)

    def satisfied(self, output: str) -> bool:
        return UNTIL[self.until][1](output)


@dataclass(frozen=True)
class ResolveHost:
    """Read the InferenceService URL: its host is the Host header the ingress routes on."""

    layer: str
    name: str
    namespace: str

    @property
    def title(self) -> str:
        return f"read InferenceService {self.namespace}/{self.name} status.url (the Host header)"

    def argv(self) -> list[str]:
        return [
            "kubectl", "get", "inferenceservice", self.name, "-n", self.namespace,
            "-o", "jsonpath={.status.url}",
        ]  # fmt: skip


@dataclass(frozen=True)
class Predict:
    layer: str
    model: str
    protocol: str
    instances: tuple[tuple[float, ...], ...]
    expected: tuple[int, ...]
    timeout_s: float = 120

    @property
    def title(self) -> str:
        rows = json.dumps([list(r) for r in self.instances])
        return f"predict {self.protocol} {rows} -> {list(self.expected)}"


@dataclass(frozen=True)
class LoadTest:
    """`kgops loadtest`; rate, duration and targets come from
    config/slo.yaml (or `slo_config`) for the environment unless `duration` is given."""

    layer: str
    env: str
    model: str
    protocol: str
    duration: str | None = None
    slo_config: Path | None = None

    @property
    def title(self) -> str:
        return f"Locust SLO test ({self.protocol}, config/slo.yaml targets for {self.env})"

    def argv(self, target: str, host: str, reports: str) -> list[str]:
        return [
            "python", "-m", "kserve_gitops.load.loadtest", "--target", target,
            "--host-header", host, "--protocol", self.protocol, "--model", self.model,
            "--env", self.env,
            "--reports", reports,
            *(["--duration", self.duration] if self.duration else []),
            *(["--slo-config", str(self.slo_config)] if self.slo_config else []),
        ]  # fmt: skip


@dataclass(frozen=True)
class StartLocalCluster:
    """The kwok provider's cluster: real etcd, kube-apiserver, kube-controller-manager and
    kube-scheduler processes, kwok for the kubelet, fake nodes, and the harness's stand-ins."""

    layer: str
    env: str
    nodes: int

    @property
    def title(self) -> str:
        return (
            "start the control plane (etcd, kube-apiserver, kube-controller-manager, "
            f"kube-scheduler) with kwok and {self.nodes} fake nodes"
        )


@dataclass(frozen=True)
class NotRun:
    """A step this provider cannot perform; the run reports it as not run, never as passed."""

    layer: str
    title: str
    reason: str


@dataclass(frozen=True)
class CheckCluster:
    """Every workload Available, every pod admitted and scheduled, every claim a pod uses
    bound, every ServiceAccount/ConfigMap/Secret a pod references present."""

    layer: str

    @property
    def title(self) -> str:
        return (
            "check: workloads Available, pods admitted and scheduled, claims bound, "
            "references present"
        )


@dataclass(frozen=True)
class Reapply:
    """The GitOps steady state: applying every layer again changes no object."""

    layer: str
    steps: tuple[HelmInstall | Apply, ...]

    @property
    def title(self) -> str:
        n = len(self.steps)
        return f"steady state: a second apply of {n} releases and layers changes nothing"


@dataclass(frozen=True)
class StartControllers:
    """The kwok provider runs a group of controllers (kserve_gitops.controllers) as processes
    built from source, in place of the kwok pods of their Deployments; their webhooks are
    served from then on."""

    layer: str
    group: str

    @property
    def title(self) -> str:
        return f"start the {self.group} controllers as processes in place of their kwok pods"


@dataclass(frozen=True)
class ObserveChain:
    """Wait for the InferenceService to be Ready, reading the chain the controllers derive
    (KnativeServing, InferenceService, Knative Service, Configuration, Revision, Route,
    Deployment, pods). Passed when Ready; not run when what holds it back needs a component
    the provider cannot run (named with the condition); failed on any other condition."""

    layer: str
    name: str
    namespace: str
    timeout_s: float = 240

    @property
    def title(self) -> str:
        return f"wait: InferenceService {self.namespace}/{self.name} Ready (the chain observed)"


@dataclass(frozen=True)
class ClusterCanary:
    """`make canary` (the newest registered version beside the stable one), then `make rollback`
    twice, each edit installed on the cluster from a repository copy; the traffic split KServe
    and Knative compute must follow each stage (kserve_gitops.controllers.canary)."""

    layer: str
    env: str
    model: str
    namespace: str
    percent: int

    @property
    def title(self) -> str:
        return (f"canary on the cluster: make canary PERCENT={self.percent}, make rollback twice; "
                "traffic split per stage")  # fmt: skip


# The canary share the kwok e2e rolls out (and back) on the running InferenceService.
CANARY_PERCENT = 10

Step = (
    CreateCluster | StartLocalCluster | HelmInstall | Apply | Run | Poll | ResolveHost | Predict
    | LoadTest | NotRun | CheckCluster | Reapply | StartControllers | ObserveChain
    | ClusterCanary
)  # fmt: skip
PROVIDERS = ("kind", "kwok")
# Why the kwok provider cannot run a step (kwok pods run no containers).
NO_CONTAINERS = "kwok pods run no containers"


@dataclass(frozen=True)
class Plan:
    env: str
    cluster: str
    kubeconfig: Path
    namespace: str
    ingress: str
    steps: tuple[Step, ...]
    provider: str = "kind"

    def layers(self) -> list[str]:
        return list(dict.fromkeys(s.layer for s in self.steps))


def ref(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')}/{ns}{meta.get('name')}"


# ---------------------------------------------------------------------------------------------
# Readiness of each upstream chart: what `helm --wait` does not prove. Taken from KServe's own
# CI (hack/setup/quick-install/*, test/scripts/gh-actions/setup-deps.sh) and kubeflow/manifests'
# kind tests; see the e2e section of the README for the file-by-file comparison.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Readiness:
    timeout_s: int
    crds: tuple[str, ...] = ()  # CRDs the chart creates and later layers use: wait Established
    services: tuple[str, ...] = ()  # webhook/ingress Services that must have a ready endpoint
    needs_crds: tuple[str, ...] = ()  # CRDs whose objects the chart itself creates
    deployments: bool = True  # the chart runs Deployments in its namespace
    daemonsets: tuple[str, ...] = ()  # DaemonSets that must be ready on every node


CERT_MANAGER_CRDS = ("certificates.cert-manager.io", "issuers.cert-manager.io")
ISTIO_CRDS = (
    "gateways.networking.istio.io",
    "virtualservices.networking.istio.io",
    "destinationrules.networking.istio.io",
    "peerauthentications.security.istio.io",
    "authorizationpolicies.security.istio.io",
)
KNATIVE_OPERATOR_CRDS = ("knativeservings.operator.knative.dev",)
KSERVE_CRDS = (
    "inferenceservices.serving.kserve.io",
    "servingruntimes.serving.kserve.io",
    "clusterservingruntimes.serving.kserve.io",
    "inferencegraphs.serving.kserve.io",
)
KSERVE_WEBHOOK = "kserve-webhook-server-service"
KSERVE_CERTIFICATE = "serving-cert"  # cert-manager Certificate of the KServe webhook
# Webhook configurations whose caBundle cert-manager's cainjector fills from that Certificate.
KSERVE_WEBHOOK_CONFIGS = (
    ("validatingwebhookconfiguration", "clusterservingruntime.serving.kserve.io"),
    ("validatingwebhookconfiguration", "inferenceservice.serving.kserve.io"),
    ("mutatingwebhookconfiguration", "inferenceservice.serving.kserve.io"),
)
SKLEARN_RUNTIME = "kserve-sklearnserver"


def readiness(chart: str, release: str) -> Readiness:
    """What tells a release of `chart` is ready, by chart (service names follow release names
    the way each chart's templates derive them)."""
    match chart:
        case "cert-manager":
            return Readiness(180, CERT_MANAGER_CRDS, (f"{_cm_fullname(release)}-webhook",))
        case "base":
            return Readiness(60, ISTIO_CRDS, deployments=False)
        case "istiod":
            return Readiness(600, services=("istiod",), needs_crds=ISTIO_CRDS)
        case "gateway":
            return Readiness(600, services=(release,))
        case "cni":
            # Istio CNI's node agent (the chart's DaemonSet name is fixed in its templates).
            return Readiness(300, deployments=False, daemonsets=("istio-cni-node",))
        case "ztunnel":
            return Readiness(300, deployments=False, daemonsets=("ztunnel",))
        case "knative-operator":
            return Readiness(300, KNATIVE_OPERATOR_CRDS, ("operator-webhook",))
        case "kserve-crd":
            return Readiness(60, KSERVE_CRDS, deployments=False)
        case "kserve-resources":
            return Readiness(300, services=(KSERVE_WEBHOOK,), needs_crds=CERT_MANAGER_CRDS)
        case "kserve-runtime-configs":
            return Readiness(
                60, needs_crds=("clusterservingruntimes.serving.kserve.io",), deployments=False
            )
    raise RenderError(f"e2e: no readiness rule for chart {chart!r} (release {release})")


def _cm_fullname(release: str) -> str:
    # cert-manager's _helpers.tpl: the release name when it contains the chart name.
    return release if "cert-manager" in release else f"{release}-cert-manager"


def wait_crds(layer: str, crds: Sequence[str], timeout_s: int = 60) -> Run:
    return Run(
        layer,
        f"wait: CRDs Established ({', '.join(crds)})",
        ("kubectl", "wait", "--for=condition=Established", f"--timeout={timeout_s}s",
         *(f"crd/{c}" for c in crds)),
        timeout_s + 30,
    )  # fmt: skip


def wait_deployments(layer: str, namespace: str, timeout_s: int) -> Run:
    return Run(
        layer,
        f"wait: every Deployment in {namespace} Available",
        ("kubectl", "wait", "--for=condition=Available", "deployment", "--all",
         "-n", namespace, f"--timeout={timeout_s}s"),
        timeout_s + 30,
    )  # fmt: skip


def wait_endpoint(layer: str, namespace: str, service: str, timeout_s: int) -> Poll:
    """A Service answers only once an EndpointSlice lists a ready address behind it: the
    moment a webhook can be called (Deployment Available can precede it)."""
    return Poll(
        layer,
        f"wait: Service {namespace}/{service} has a ready endpoint",
        ("kubectl", "get", "endpointslices", "-n", namespace,
         "-l", f"kubernetes.io/service-name={service}", "-o", "json"),
        "ready-endpoint",
        timeout_s,
    )  # fmt: skip


def ready_endpoint(output: str) -> bool:
    """True when an EndpointSlice list (kubectl -o json) has an address whose endpoint is ready
    (EndpointSlice v1: a missing `ready` condition means ready)."""
    try:
        slices = json.loads(output).get("items") or []
    except (ValueError, AttributeError):
        return False
    return any(
        ep.get("addresses") and (ep.get("conditions") or {}).get("ready", True) is not False
        for s in slices
        for ep in s.get("endpoints") or []
    )


# Poll conditions: what the plan prints, and the check the executor applies to the output.
UNTIL: dict[str, tuple[str, Any]] = {
    "success": ("until it exits 0", lambda _out: True),
    "output": ("until it exits 0 and prints something", lambda out: bool(out.strip())),
    "ready-endpoint": ("until an EndpointSlice lists a ready address", ready_endpoint),
}


# ---------------------------------------------------------------------------------------------
# The plan.
# ---------------------------------------------------------------------------------------------


def e2e_values_file(release: str) -> Path | None:
    """e2e/values/<release>.yaml: what only a kind cluster needs on top of the declared values."""
    path = E2E_VALUES / f"{release}.yaml"
    return path if path.is_file() else None


def install_release(layer: str, rel: flux.Release, provider: str = "kind") -> list[Step]:
    """kind installs from the chart's repository, as a user does; kwok from the chart cache
    (`make charts`), since this machine reaches no chart repository."""
    ready = readiness(rel.chart, rel.name)
    override = e2e_values_file(rel.name)
    repository: str | None = rel.repository
    chart, version = rel.chart, rel.version
    if provider == "kwok":
        chart = paths.rel(upstream_charts.chart_dir(Repo.discover(), rel.chart, rel.version))
        repository, version = None, None
    elif rel.repository.startswith("oci://") and rel.repository.rstrip("/").endswith(
        f"/{rel.chart}"
    ):
        repository = rel.repository.rstrip("/").removesuffix(f"/{rel.chart}")
    steps: list[Step] = [
        HelmInstall(
            layer,
            rel.name,
            chart,
            repository,
            version,
            rel.namespace,
            values=rel.values,
            values_source=rel.values_file or f"HelmRelease {rel.name} spec.values",
            value_files=(override,) if override else (),
            # KServe's installer retries kserve-resources once: its Certificate can race the
            # cert-manager webhook's CA bundle on a fresh cluster.
            attempts=2 if rel.chart == "kserve-resources" else 1,
        )
    ]
    if ready.crds:
        steps.append(wait_crds(layer, ready.crds, ready.timeout_s))
    if ready.deployments:
        steps.append(wait_deployments(layer, rel.namespace, ready.timeout_s))
    steps += [
        Run(layer, f"wait: DaemonSet {rel.namespace}/{ds} ready on every node",
            ("kubectl", "rollout", "status", f"daemonset/{ds}", "-n", rel.namespace,
             f"--timeout={ready.timeout_s}s"), ready.timeout_s + 30)
        for ds in ready.daemonsets
    ]  # fmt: skip
    steps += [wait_endpoint(layer, rel.namespace, svc, ready.timeout_s) for svc in ready.services]
    if rel.chart == "kserve-resources":
        steps += kserve_webhook_tls(layer, rel.namespace)
    if rel.chart == "kserve-runtime-configs":
        steps.append(
            Poll(
                layer,
                f"check: ClusterServingRuntime {SKLEARN_RUNTIME} exists",
                ("kubectl", "get", "clusterservingruntime", SKLEARN_RUNTIME, "-o", "name"),
                "output",
                ready.timeout_s,
            )
        )
    if provider == "kwok" and rel.chart in CONTROLLER_CHARTS:
        steps.append(StartControllers(layer, CONTROLLER_CHARTS[rel.chart]))
    return steps


# Charts whose controllers the kwok provider runs as processes once the chart is installed
# (the Knative Serving controllers start once the operator created their Deployments).
CONTROLLER_CHARTS = {"knative-operator": "knative-operator", "kserve-resources": "kserve"}


def kserve_webhook_tls(layer: str, namespace: str) -> list[Step]:
    """A webhook whose caBundle is still empty fails every call with a TLS error: wait for the
    serving certificate (as kubeflow/manifests' kserve install does) and for its injection."""
    steps: list[Step] = [
        Run(layer, f"wait: Certificate {namespace}/{KSERVE_CERTIFICATE} Ready",
            ("kubectl", "wait", "--for=condition=Ready", f"certificate/{KSERVE_CERTIFICATE}",
             "-n", namespace, "--timeout=120s"), 150)
    ]  # fmt: skip
    for kind, name in KSERVE_WEBHOOK_CONFIGS:
        steps.append(
            Poll(
                layer,
                f"wait: cert-manager injected the CA into {kind} {name}",
                ("kubectl", "get", kind, name, "-o",
                 "jsonpath={.webhooks[*].clientConfig.caBundle}"),
                "output",
                120,
            )
        )  # fmt: skip
    return steps


# Group of the Prometheus Operator's objects (the monitoring layer). A monitored cluster already
# runs the operator; the e2e installs its pinned CRDs (config/crds.tsv) so the API server admits
# the monitors and rules, with nothing acting on them.
MONITORING_GROUP = "monitoring.coreos.com"


def monitoring_crds(layer: flux.Layer) -> list[Step]:
    groups = {str(o.get("apiVersion", "")).split("/")[0] for o in layer.manifests}
    if MONITORING_GROUP not in groups:
        return []
    files = [p for p in crds.ensure(Repo.discover()) if p.name.startswith(f"{MONITORING_GROUP}_")]
    names = tuple(f"{p.stem.split('_', 1)[1]}.{MONITORING_GROUP}" for p in files)
    args = [a for p in files for a in ("-f", paths.rel(p))]
    return [
        Run(layer.name, "apply the pinned Prometheus Operator CRDs (config/crds.tsv)",
            ("kubectl", "apply", "--server-side", *args), 120),
        wait_crds(layer.name, names),
    ]  # fmt: skip


def on_one_node(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the one-node e2e cluster (e2e/kind-config.yaml) takes it: a claim the
    environment shares across nodes (ReadWriteMany) is ReadWriteOnce here, where every replica
    runs on the same node and kind's local-path provisioner offers nothing else."""
    if obj.get("kind") != "PersistentVolumeClaim":
        return obj
    spec = obj.get("spec") or {}
    if set(spec.get("accessModes") or []) <= {"ReadWriteOnce", "ReadWriteOncePod"}:
        return obj
    return {**obj, "spec": {**spec, "accessModes": ["ReadWriteOnce"]}}


# The registry of KServe's runtime images (kserve/sklearnserver), where Knative's controller
# resolves a revision's image tag to a digest. The kwok provider reaches no registry.
RUNTIME_REGISTRY = "index.docker.io"


def without_registry(obj: dict[str, Any]) -> dict[str, Any]:
    """The KnativeServing as the kwok provider applies it: the runtime images' registry added
    to registries-skipping-tag-resolving (the remedy platform/configs/knative-serving.yaml
    gives for a registry the controller cannot reach), so revisions run the tag."""
    if obj.get("kind") != "KnativeServing":
        return obj
    spec = obj.get("spec") or {}
    cfg = spec.get("config") or {}
    deployment = cfg.get("deployment") or {}
    key = "registries-skipping-tag-resolving"
    skipped = [r for r in str(deployment.get(key, "")).split(",") if r]
    if RUNTIME_REGISTRY in skipped:
        return obj
    deployment = {**deployment, key: ",".join([*skipped, RUNTIME_REGISTRY])}
    return {**obj, "spec": {**spec, "config": {**cfg, "deployment": deployment}}}


def apply_layer(layer: flux.Layer, provider: str = "kind") -> list[Step]:
    objs = tuple(on_one_node(o) for o in layer.manifests)
    if provider == "kwok":
        objs = tuple(without_registry(o) for o in objs)
    steps: list[Step] = [
        *monitoring_crds(layer),
        Apply(
            layer.name,
            f"apply the plain manifests of {layer.path}",
            f"kustomize build {layer.path}",
            objs,
        ),
    ]
    for obj in layer.manifests:
        if obj.get("kind") == "KnativeServing":
            # Ready once every Serving and net-istio deployment is; KServe's installer gives it
            # 300s, twice that here because a fresh runner pulls all the Knative images first.
            meta = obj["metadata"]
            if provider == "kwok":
                steps.append(StartControllers(layer.name, "knative-serving"))
            steps.append(
                Run(
                    layer.name,
                    f"wait: KnativeServing {meta['namespace']}/{meta['name']} Ready",
                    ("kubectl", "wait", "--for=condition=Ready", f"knativeserving/{meta['name']}",
                     "-n", meta["namespace"], "--timeout=600s"),
                    630,
                )
            )  # fmt: skip
    return steps


def _storage(values: Mapping[str, Any], source: str) -> tuple[str, str]:
    uri = str((values.get("model") or {}).get("storageUri", ""))
    claim, _, sub = uri.removeprefix("pvc://").partition("/")
    if not uri.startswith("pvc://") or not claim or not sub:
        raise RenderError(
            f"{source}: model.storageUri: the e2e delivers the model on a PVC and expects "
            f"pvc://<claim>/<path>, got {uri!r}"
        )
    return claim, sub.strip("/")


def model_store(
    env: str,
    namespace: str,
    values: Mapping[str, Any],
    source: str,
    declared: set[str],
    claims: set[str],
) -> list[Step]:
    """Put the trained model on the claim the storageUri names, through a short-lived pod, in
    the namespace a platform layer declares (`declared`: namespaces applied before). The claim
    is the environment's own (`claims`: the ones its layers applied), never the e2e's."""
    repo = Repo.discover()  # until the caller passes its Repo
    objs = render.kustomize_build(repo, MODEL_STORE)
    where = f"kustomize build {paths.rel(MODEL_STORE)}"
    claim, sub = _storage(values, source)
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
            f"(the namespace of HelmRelease {MODEL} in clusters/{env})"
        )
    if namespace not in declared:
        raise RenderError(
            f"clusters/{env}: no platform layer declares Namespace {namespace!r} (HelmRelease "
            f"{MODEL}'s); the e2e creates no namespace of its own"
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
    served = paths.MODELS / MODEL / sub / "model.joblib"
    artifacts = sorted({served, *(paths.MODELS / MODEL).glob("v*/model.joblib")})
    kexec = ("kubectl", "exec", "-n", namespace, pod, "-c", container["name"], "--")
    copies: list[Step] = []
    for artifact in artifacts:
        target = f"{mount}/{Path(sub).parent / artifact.parent.name}".replace("/./", "/")
        copies += [
            Run("model", f"create {target} on the claim", (*kexec, "mkdir", "-p", target)),
            Run("model", f"copy {paths.rel(artifact)} onto the claim",
                ("kubectl", "cp", paths.rel(artifact),
                 f"{namespace}/{pod}:{target}/model.joblib", "-c", container["name"])),
            Run("model", f"check: {target}/model.joblib is on the claim",
                (*kexec, "ls", "-l", f"{target}/model.joblib")),
        ]  # fmt: skip
    return [
        Apply("model", f"apply the e2e model loader (mounts claim {claim})", where, tuple(objs)),
        Run("model", f"wait: pod {pod} Ready (claim {claim} bound)",
            ("kubectl", "wait", "--for=condition=Ready", f"pod/{pod}", "-n", namespace,
             "--timeout=300s"), 330),
        *copies,
        Run("model", f"delete pod {pod} (the claim keeps the model)",
            ("kubectl", "delete", "pod", pod, "-n", namespace, "--wait=true", "--timeout=120s")),
    ]  # fmt: skip


def _claim_volume(pod: Mapping[str, Any], claim: str) -> str:
    for vol in pod["spec"].get("volumes") or []:
        if (vol.get("persistentVolumeClaim") or {}).get("claimName") == claim:
            return str(vol["name"])
    raise RenderError(f"e2e/model-store: the loader pod does not mount claim {claim!r}")


def deploy(namespace: str, values_file: Path) -> tuple[list[Step], list[Obj]]:
    """Our chart with the environment's values, as a user installs it; first a server-side dry
    run that only passes once KServe's webhook admits the InferenceService."""
    repo = Repo.discover()  # until the caller passes its Repo
    source = paths.rel(values_file)
    values = render.model_values(repo, values_file)
    objs = render.render_chart(repo, repo.model_chart, values, MODEL, namespace, source)
    bodies = tuple(o.body for o in objs)
    steps: list[Step] = [
        Poll(
            "deploy",
            "wait: KServe's webhook admits the InferenceService (server-side dry run)",
            ("kubectl", "apply", "--server-side", "--dry-run=server", "--field-manager",
             "kgops-e2e", "-f", "-"),
            "success",
            120,
            stdin_objects=bodies,
        ),
        HelmInstall("deploy", MODEL, paths.rel(repo.model_chart), None, None, namespace,
                    values_source=source, value_files=(values_file,), timeout="5m"),
        Run("deploy", f"wait: InferenceService {namespace}/{MODEL} Ready",
            ("kubectl", "wait", "--for=condition=Ready", f"inferenceservice/{MODEL}",
             "-n", namespace, "--timeout=600s"), 630),
    ]  # fmt: skip
    return steps, objs


def without_containers(steps: list[Step]) -> list[Step]:
    """The kwok provider's version of a step list: what needs a container (exec/cp into a
    pod, traffic through the ingress) is not run; the InferenceService Ready wait observes the
    chain the controllers (run as processes) derive, and says what holds it back."""
    out: list[Step] = []
    for step in steps:
        match step:
            case Run() if step.command[:2] in (("kubectl", "exec"), ("kubectl", "cp")):
                out.append(NotRun(step.layer, step.title, f"{NO_CONTAINERS} (exec/cp)"))
            case Run() if any(a.startswith("inferenceservice/") for a in step.command):
                name = next(a for a in step.command if a.startswith("inferenceservice/"))
                ns = step.command[step.command.index("-n") + 1]
                out.append(ObserveChain(step.layer, name.split("/", 1)[1], ns))
            case ResolveHost() | Predict() | LoadTest():
                out.append(NotRun(step.layer, step.title, f"{NO_CONTAINERS}: no model server, "
                                  "no Istio ingress data plane"))  # fmt: skip
            case _:
                out.append(step)
    return out


def only_layers(steps: list[Step], keep: set[str]) -> list[Step]:
    """The cluster's own steps, the steps of the `keep` layers, and the checks over them."""
    out: list[Step] = []
    for step in steps:
        if isinstance(step, Reapply):
            out.append(Reapply(step.layer, tuple(s for s in step.steps if s.layer in keep)))
        elif step.layer in ("cluster", "check") or step.layer in keep:
            out.append(step)
    return out


def build(env: str, provider: str = "kind", layers: set[str] | None = None) -> Plan:
    """Every step of `make e2e ENV=env [CLUSTER=kwok]`, in order, from the repository alone;
    with `layers`, only the cluster, those layers and the checks."""
    repo = Repo.discover()  # until the caller passes its Repo
    if provider not in PROVIDERS:
        raise RenderError(f"e2e: unknown cluster provider {provider!r} (one of {PROVIDERS})")
    versions = repo.versions
    kube = versions.get("kubernetes") or {}
    cluster = f"kgops-{env}"
    if provider == "kwok":
        from kserve_gitops.localcluster.controlplane import ClusterConfig

        kubeconfig = paths.CACHE / "e2e" / env / "kubeconfig"
        first: Step = StartLocalCluster("cluster", env, ClusterConfig.load().nodes)
    else:
        kubeconfig = paths.CACHE / "e2e" / f"{cluster}.kubeconfig"
        first = CreateCluster(
            "cluster", cluster, KIND_CONFIG, str(kube.get("nodeImage", "")), kubeconfig
        )
    steps: list[Step] = [
        first,
        Run("cluster", "wait: node Ready",
            ("kubectl", "wait", "--for=condition=Ready", "node", "--all", "--timeout=120s"), 150),
    ]  # fmt: skip
    models: list[flux.Release] = []
    namespaces: set[str] = set()
    claims: set[str] = set()
    for layer in flux.layers(repo, env):
        for rel in layer.releases:
            if rel.local:
                models.append(rel)  # our chart: installed after the model is on its claim
            else:
                steps += install_release(layer.name, rel, provider)
        if layer.manifests:
            steps += apply_layer(layer, provider)
            namespaces |= {
                o["metadata"]["name"] for o in layer.manifests if o["kind"] == "Namespace"
            }
            claims |= {
                o["metadata"]["name"]
                for o in layer.manifests
                if o["kind"] == "PersistentVolumeClaim"
            }
    model = next((r for r in models if r.name == MODEL and r.values_file), None)
    if model is None:
        raise RenderError(f"clusters/{env}: no HelmRelease {MODEL} of our chart with a values file")
    values_file = paths.ROOT / str(model.values_file)
    values = render.model_values(repo, values_file)
    steps += model_store(env, model.namespace, values, paths.rel(values_file), namespaces, claims)
    steps += deploy(model.namespace, values_file)[0]
    steps.append(ResolveHost("verify", MODEL, model.namespace))
    for protocol in ("v1", "v2"):
        steps += [Predict("verify", MODEL, protocol, rows, want) for rows, want in PREDICTIONS]
    steps.append(LoadTest("verify", env, MODEL, "v1"))
    if provider == "kwok":
        steps = without_containers(steps)
        applied = tuple(
            s for s in steps
            if isinstance(s, HelmInstall) or (isinstance(s, Apply) and s.layer != "model")
        )  # fmt: skip
        steps += [CheckCluster("check"), Reapply("check", applied)]
        # Last: the rollout's edits change the InferenceService the steady state is about.
        steps.append(ClusterCanary("canary", env, MODEL, model.namespace, CANARY_PERCENT))
    if layers:
        unknown = layers - {s.layer for s in steps}
        if unknown:
            known = ", ".join(dict.fromkeys(s.layer for s in steps))
            raise RenderError(f"e2e: no layer {', '.join(sorted(unknown))} (layers: {known})")
        steps = only_layers(steps, layers)
    ingress = f"http://127.0.0.1:{INGRESS_NODE_PORT}"
    return Plan(env, cluster, kubeconfig, model.namespace, ingress, tuple(steps), provider)


# ---------------------------------------------------------------------------------------------
# The plan as text (`make e2e-plan`).
# ---------------------------------------------------------------------------------------------

HOST_PLACEHOLDER = "<host of status.url>"


def _block(text: str, indent: str = "        | ") -> list[str]:
    return [f"{indent}{line}".rstrip() for line in text.rstrip().splitlines()]


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False) if data else "{}"


def values_placeholder(step: HelmInstall) -> str | None:
    return f"<values of {step.release}>" if step.values else None


def describe_step(step: Step, plan: Plan) -> list[str]:
    """The lines `make e2e-plan` prints for one step: the command(s), then what goes in."""
    repo = Repo.discover()  # until the caller passes its Repo
    out: list[str] = []
    match step:
        case CreateCluster():
            out.append(f"      $ {' '.join(step.argv())}")
        case StartLocalCluster():
            out.append(f"      processes under {paths.rel(paths.CACHE / 'e2e' / step.env)}/, "
                       "logs in logs/, kubeconfig in kubeconfig")  # fmt: skip
            out += [f"      stand-in: {line}" for line in STAND_INS]
        case NotRun():
            out.append(f"      NOT RUN on this provider: {step.reason}")
        case StartControllers():
            from kserve_gitops.controllers import processes

            for role in (r for r in processes.ROLES if r.group == step.group):
                out.append(f"      process {role.binary} for Deployment {role.namespace}/"
                           f"{role.deployment} (container {role.container}), own network "
                           "namespace, its ServiceAccount's identity")  # fmt: skip
            out.append("      then its webhooks are served: their failurePolicy stand-in ends")
        case ClusterCanary():
            out.append(f"      in a copy of the repository: kgops rollout canary "
                       f"--env {step.env} --version <newest besides stable> --percent "
                       f"{step.percent}; rollback; rollback")  # fmt: skip
            out.append(f"      after each: helm upgrade {step.model} with the copy's values file; "
                       "the Knative Service's status.traffic must match the stage")  # fmt: skip
        case ObserveChain():
            out.append(f"      reads KnativeServing, InferenceService {step.name}, its Knative "
                       "Service, Configuration, Revision, Route, Deployment and pods every 5s "
                       f"(up to {step.timeout_s:g}s); conditions go to the report")  # fmt: skip
            out.append("      not run (not passed) when only what needs a container runtime or "
                       "Istio's data plane holds Ready back; failed on anything else")  # fmt: skip
        case CheckCluster():
            out.append("      reads every Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, "
                       "Pod, PVC, ServiceAccount, ConfigMap, Secret, CRD and event")  # fmt: skip
        case Reapply():
            out += [f"      again: {s.title}" for s in step.steps]
            out.append("      no applied object changes outside its status")
        case HelmInstall():
            out.append(f"      $ {' '.join(step.argv(values_placeholder(step)))}")
            if step.attempts > 1:
                out.append(f"      (up to {step.attempts} attempts)")
            if step.values:
                out.append(f"      <values of {step.release}> = {step.values_source}:")
                out += _block(_yaml(dict(step.values)))
            for path in step.value_files:
                if path.is_relative_to(E2E):
                    out.append(f"      e2e override {paths.rel(path)}:")
                    out += _block(path.read_text())
            if step.repository is None:
                objs = render.render_chart(
                    repo, paths.ROOT / step.chart, _merged(step), step.release, step.namespace,
                    step.values_source,
                )  # fmt: skip
                out.append("      renders (the objects `make validate` checks for this env):")
                out += [f"        - {o.ref} in {step.namespace}" for o in objs]
        case Apply():
            out.append(f"      $ {' '.join(step.argv('<manifests>'))}")
            out.append(f"      <manifests> = {step.source}:")
            out += [f"        - {r}" for r in step.refs()]
        case Run():
            out.append(f"      $ {' '.join(step.argv())}")
        case Poll():
            how = UNTIL[step.until][0]
            out.append(f"      $ {' '.join(step.argv())}")
            out.append(f"      every {step.interval_s:g}s for up to {step.timeout_s:g}s, {how}")
            if step.stdin_objects:
                out.append("      stdin: " + ", ".join(ref(o) for o in step.stdin_objects))
        case ResolveHost():
            out.append(f"      $ {' '.join(step.argv())}")
        case Predict():
            path = client.predict_path(step.protocol, step.model)
            body = json.dumps(client.request_body(step.protocol, step.instances))
            out.append(f"      POST {plan.ingress}{path}  Host: {HOST_PLACEHOLDER}")
            out.append(f"      body {body}")
            out.append(
                f"      expect {list(step.expected)}; retries connection errors, 404 (route not "
                f"yet programmed) and 429/502/503/504 for up to {step.timeout_s:g}s"
            )
        case LoadTest():
            argv = step.argv(plan.ingress, HOST_PLACEHOLDER, "reports/e2e-<timestamp>/loadtest")
            out.append(f"      $ {' '.join(argv)}")
            out.append("      fails the run when the SLO verdict is a miss")
    return out


def _merged(step: HelmInstall) -> dict[str, Any]:
    repo = Repo.discover()  # until the caller passes its Repo
    values = dict(step.values)
    for path in step.value_files:
        values.update(render.model_values(repo, path))
    return values


# What the harness does in place of components that cannot run on the kwok provider
# (kserve_gitops.localcluster.standins), printed by the plan and the summary.
STAND_INS = (
    "kwok stands in for the kubelet: pods are scheduled and marked Running, no container runs",
    "webhooks with failurePolicy Fail get Ignore until their server runs as a process "
    "(kserve_gitops.controllers); each one still ignored is listed",
    "cert-manager: Certificates get Secrets from the harness CA, and CA bundles are injected",
    "volumes: each PersistentVolumeClaim gets a PersistentVolume made for it",
    f"image digests: the KnativeServing's registries-skipping-tag-resolving gets "
    f"{RUNTIME_REGISTRY} (no registry is reachable; revisions run the image tag)",
)


def describe_kwok(plan: Plan) -> list[str]:
    from kserve_gitops.localcluster import controlplane

    cfg = controlplane.ClusterConfig.load()
    kube = Repo.discover().versions.get("kubernetes") or {}
    not_run = sum(isinstance(s, NotRun) for s in plan.steps)
    return [
        f"e2e plan for {plan.env} on kwok: nothing below has run; `make e2e CLUSTER=kwok "
        f"ENV={plan.env}` runs these {len(plan.steps)} steps ({not_run} of them are not run on "
        "this provider and are reported so), then stops the cluster (KEEP=1 keeps it).",
        f"  cluster  {plan.cluster}: Kubernetes {kube.get('version')} built from source, "
        f"{cfg.nodes} kwok nodes of {cfg.cpu} CPU / {cfg.memory}, pod IPs from {cfg.pod_cidr}, "
        f"{paths.rel(controlplane.CLUSTER_CONFIG)}",
        f"  pins     {paths.rel(paths.VERSIONS)}, through the Flux declarations of "
        f"clusters/{plan.env}; upstream charts from the chart cache (`make charts`)",
        f"  access   every command runs with KUBECONFIG={paths.rel(plan.kubeconfig)}",
        "  report   reports/e2e-<timestamp>/: plan, commands, final state per layer, events, "
        "component logs",
    ]


def describe(plan: Plan) -> str:
    if plan.provider == "kwok":
        lines = describe_kwok(plan)
        return _describe_steps(plan, lines)
    versions = Repo.discover().versions
    kube = versions.get("kubernetes") or {}
    lines = [
        f"e2e plan for {plan.env}: nothing below has run; `make e2e ENV={plan.env}` runs exactly "
        f"these {len(plan.steps)} steps, then deletes the cluster (KEEP=1 keeps it).",
        f"  cluster  {plan.cluster}: kind {kube.get('kind')}, Kubernetes {kube.get('version')}, "
        f"{paths.rel(KIND_CONFIG)}",
        f"  ingress  {plan.ingress} (Istio ingress gateway NodePort {INGRESS_NODE_PORT}, "
        "mapped to the host by kind)",
        f"  pins     {paths.rel(paths.VERSIONS)}, through the Flux declarations of "
        f"clusters/{plan.env}",
        f"  access   every command runs with KUBECONFIG={paths.rel(plan.kubeconfig)} "
        "(your own kubeconfig is never used)",
        "  on failure: events, pod logs of every platform namespace, InferenceService/Knative "
        "status and the Locust report go to reports/e2e-<timestamp>/",
        "",
        f"kind cluster config ({paths.rel(KIND_CONFIG)}):",
        *_block(KIND_CONFIG.read_text(), "    | "),
    ]
    return _describe_steps(plan, lines)


def _describe_steps(plan: Plan, lines: list[str]) -> str:
    layer = None
    for number, step in enumerate(plan.steps, start=1):
        if step.layer != layer:
            layer = step.layer
            lines += ["", f"[{layer}]"]
        lines.append(f"  {number:>2}. {step.title}")
        lines += describe_step(step, plan)
    return "\n".join(lines) + "\n"
