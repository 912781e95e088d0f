"""The e2e as data: the ordered steps `kgops e2e --plan` prints and `kgops e2e` executes, so the
plan the tests check is the run CI performs.

Versions and values come from the platform declarations (the Flux HelmReleases under clusters/
and versions.yaml, read through kserve_gitops.repo.flux); this module only adds what a
throwaway cluster needs on top (e2e/values/<release>.yaml), the waits that tell one layer is
ready for the next (kserve_gitops.e2e.readiness), and, for every model the environment deploys
with our chart, its delivery onto the claim, its install and the predictions of
e2e/predictions/<model>.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kserve_gitops.e2e import golden, node_plan
from kserve_gitops.e2e.model_store import model_store
from kserve_gitops.e2e.readiness import (
    SKLEARN_RUNTIME,
    kserve_webhook_tls,
    readiness,
    wait_crds,
    wait_deployments,
    wait_endpoint,
)
from kserve_gitops.e2e.steps import (
    Apply,
    CheckCluster,
    ClusterCanary,
    CreateCluster,
    HelmInstall,
    LoadTest,
    NotRun,
    ObserveChain,
    Plan,
    Poll,
    Predict,
    Reapply,
    ResolveHost,
    Run,
    StartControllers,
    StartLocalCluster,
    Step,
)
from kserve_gitops.repo import Repo, flux, render
from kserve_gitops.repo.render import Obj, RenderError
from kserve_gitops.upstream import charts as upstream_charts
from kserve_gitops.upstream import crds

PROVIDERS = ("kind", "kwok", "node")
# Providers on the local control plane built from source (kserve_gitops.localcluster); "node"
# adds the real node (kserve_gitops.node).
LOCAL = ("kwok", "node")
INGRESS_NODE_PORT = 31080
# The canary share the kwok e2e rolls out (and back) on the running InferenceService.
CANARY_PERCENT = 10
# Why the kwok provider cannot run a step (kwok pods run no containers).
NO_CONTAINERS = "kwok pods run no containers"


def kind_config(repo: Repo) -> Path:
    return repo.e2e / "kind-config.yaml"


def e2e_values_file(repo: Repo, release: str) -> Path | None:
    """e2e/values/<release>.yaml: what only a throwaway cluster needs on top of the declared
    values (as a path relative to the checkout, the way helm is given it)."""
    path = repo.e2e / "values" / f"{release}.yaml"
    return Path(repo.rel(path)) if path.is_file() else None


def install_release(
    repo: Repo,
    layer: str,
    rel: flux.Release,
    provider: str = "kind",
    refs: dict[str, str] | None = None,
) -> list[Step]:
    """kind installs from the chart's repository, as a user does; kwok from the chart cache
    (`make charts`), since this machine reaches no chart repository. On the real node, the
    test overlay's values (kserve_gitops.e2e.node_plan) go on top."""
    ready = readiness(rel.chart, rel.name)
    override = e2e_values_file(repo, rel.name)
    repository: str | None = rel.repository
    chart, version = rel.chart, rel.version
    values, source = rel.values, rel.values_file or f"HelmRelease {rel.name} spec.values"
    extra = node_plan.release_values(rel.name, refs or {}) if provider == "node" else {}
    if extra:
        values = render.merged(dict(values), extra)
        source += f" + real-node overlay {extra}"
    if provider in LOCAL:
        chart = repo.rel(upstream_charts.chart_dir(repo, rel.chart, rel.version))
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
            values=values,
            values_source=source,
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
        Run(
            layer,
            f"wait: DaemonSet {rel.namespace}/{ds} ready on every node",
            (
                "kubectl",
                "rollout",
                "status",
                f"daemonset/{ds}",
                "-n",
                rel.namespace,
                f"--timeout={ready.timeout_s}s",
            ),
            ready.timeout_s + 30,
        )
        for ds in ready.daemonsets
    ]
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
    if provider in LOCAL and rel.chart in CONTROLLER_CHARTS:
        steps.append(StartControllers(layer, CONTROLLER_CHARTS[rel.chart]))
    return steps


# Charts whose controllers the kwok provider runs as processes once the chart is installed
# (the Knative Serving controllers start once the operator created their Deployments).
CONTROLLER_CHARTS = {"knative-operator": "knative-operator", "kserve-resources": "kserve"}

# Group of the Prometheus Operator's objects (the monitoring layer). A monitored cluster already
# runs the operator; the e2e installs its pinned CRDs (config/crds.tsv) so the API server admits
# the monitors and rules, with nothing acting on them.
MONITORING_GROUP = "monitoring.coreos.com"


def monitoring_crds(repo: Repo, layer: flux.Layer) -> list[Step]:
    groups = {str(o.get("apiVersion", "")).split("/")[0] for o in layer.manifests}
    if MONITORING_GROUP not in groups:
        return []
    files = [p for p in crds.ensure(repo) if p.name.startswith(f"{MONITORING_GROUP}_")]
    names = tuple(f"{p.stem.split('_', 1)[1]}.{MONITORING_GROUP}" for p in files)
    args = [a for p in files for a in ("-f", repo.rel(p))]
    return [
        Run(
            layer.name,
            "apply the pinned Prometheus Operator CRDs (config/crds.tsv)",
            ("kubectl", "apply", "--server-side", *args),
            120,
        ),
        wait_crds(layer.name, names),
    ]


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


def on_real_node(obj: Obj, refs: dict[str, str], model_namespaces: set[str]) -> Obj:
    """An object as the real-node provider applies it (kserve_gitops.e2e.node_plan)."""
    if obj.get("kind") == "KnativeServing":
        return node_plan.knative_serving(obj, refs)
    if obj.get("kind") == "Namespace" and obj["metadata"]["name"] in model_namespaces:
        return node_plan.on_node_namespace(obj)
    return obj


def apply_layer(
    repo: Repo,
    layer: flux.Layer,
    provider: str = "kind",
    refs: dict[str, str] | None = None,
    model_namespaces: set[str] | None = None,
) -> list[Step]:
    objs = tuple(on_one_node(o) for o in layer.manifests)
    if provider in LOCAL:
        objs = tuple(without_registry(o) for o in objs)
    if provider == "node":
        objs = tuple(on_real_node(o, refs or {}, model_namespaces or set()) for o in objs)
    steps: list[Step] = [
        *monitoring_crds(repo, layer),
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
            # On the real node Knative Serving's own pods run (node_plan.KNATIVE_ON_NODE).
            steps.append(
                Run(
                    layer.name,
                    f"wait: KnativeServing {meta['namespace']}/{meta['name']} Ready",
                    (
                        "kubectl",
                        "wait",
                        "--for=condition=Ready",
                        f"knativeserving/{meta['name']}",
                        "-n",
                        meta["namespace"],
                        "--timeout=600s",
                    ),
                    630,
                )
            )
    return steps


def deploy(
    repo: Repo, model: str, namespace: str, values_file: Path
) -> tuple[list[Step], list[Obj]]:
    """Our chart with the environment's values, as a user installs it; first a server-side dry
    run that only passes once KServe's webhook admits the InferenceService."""
    source = repo.rel(values_file)
    values = render.model_values(repo, values_file)
    objs = render.render_chart(repo, repo.model_chart, values, model, namespace, source)
    bodies = tuple(o.body for o in objs)
    steps: list[Step] = [
        Poll(
            "deploy",
            "wait: KServe's webhook admits the InferenceService (server-side dry run)",
            (
                "kubectl",
                "apply",
                "--server-side",
                "--dry-run=server",
                "--field-manager",
                "kgops-e2e",
                "-f",
                "-",
            ),
            "success",
            120,
            stdin_objects=bodies,
        ),
        HelmInstall(
            "deploy",
            model,
            repo.rel(repo.model_chart),
            None,
            None,
            namespace,
            values_source=source,
            value_files=(Path(source),),
            timeout="5m",
        ),
        Run(
            "deploy",
            f"wait: InferenceService {namespace}/{model} Ready",
            (
                "kubectl",
                "wait",
                "--for=condition=Ready",
                f"inferenceservice/{model}",
                "-n",
                namespace,
                "--timeout=600s",
            ),
            630,
        ),
    ]
    return steps, objs


def without_containers(steps: list[Step], real_node: bool = False) -> list[Step]:
    """The kwok provider's version of a step list: what needs a container (exec/cp into a
    pod, traffic through the ingress) is not run; the InferenceService Ready wait observes the
    chain the controllers (run as processes) derive, and says what holds it back. With a
    `real_node` the model's pods run, so exec/cp and the cluster paths run too; only the
    ingress stays not run."""
    out: list[Step] = []
    for step in steps:
        match step:
            case Run() if real_node and step.command[:2] in (
                ("kubectl", "exec"),
                ("kubectl", "cp"),
            ):
                out.append(step)
            case Predict() | LoadTest() if real_node and step.path:
                out.append(step)
            case Run() if step.command[:2] in (("kubectl", "exec"), ("kubectl", "cp")):
                out.append(NotRun(step.layer, step.title, f"{NO_CONTAINERS} (exec/cp)"))
            case Run() if any(a.startswith("inferenceservice/") for a in step.command):
                name = next(a for a in step.command if a.startswith("inferenceservice/"))
                ns = step.command[step.command.index("-n") + 1]
                out.append(ObserveChain(step.layer, name.split("/", 1)[1], ns))
            case ResolveHost() | Predict() | LoadTest():
                out.append(
                    NotRun(
                        step.layer,
                        step.title,
                        f"{NO_CONTAINERS}: no model server, no Istio ingress data plane",
                    )
                )
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


def models(repo: Repo, env: str, releases: list[flux.Release]) -> list[tuple[flux.Release, Path]]:
    """The releases of our chart that deploy a model (a values file under
    environments/<env>/models/), each with that file, in the order clusters/<env> declares."""
    found = [
        (r, repo.root / str(r.values_file))
        for r in releases
        if r.values_file
        and (repo.root / str(r.values_file)).is_relative_to(repo.environment_dir(env) / "models")
    ]
    if not found:
        raise RenderError(
            f"clusters/{env}: no HelmRelease of our chart with a values file under "
            f"{repo.rel(repo.environment_dir(env) / 'models')}/"
        )
    return found


def build(
    repo: Repo,
    env: str,
    provider: str = "kind",
    layers: set[str] | None = None,
    reliability: bool = False,
    scenario_names: tuple[str, ...] | None = None,
) -> Plan:
    """Every step of `kgops e2e --env env [--cluster kwok]`, in order, from the checkout alone;
    with `layers`, only the cluster, those layers and the checks; with `reliability` (the real
    node only), the reliability scenarios after the verification (`scenario_names`, or all)."""
    if provider not in PROVIDERS:
        raise RenderError(f"e2e: unknown cluster provider {provider!r} (one of {PROVIDERS})")
    if reliability and provider != "node":
        raise RenderError("e2e: the reliability scenarios need the real node (--cluster node)")
    cluster = f"kgops-{env}"
    refs: dict[str, str] = {}
    if provider in LOCAL:
        from kserve_gitops.localcluster import controlplane

        kubeconfig = controlplane.kubeconfig_file(repo, env)
        nodes = controlplane.ClusterConfig.load(repo).nodes
        first: Step = StartLocalCluster("cluster", env, nodes, real_node=provider == "node")
        if provider == "node":
            from kserve_gitops.node import images

            refs = images.refs(repo)
    else:
        kubeconfig = repo.cache / "e2e" / f"{cluster}.kubeconfig"
        node_image = str((repo.versions.get("kubernetes") or {}).get("nodeImage", ""))
        first = CreateCluster(
            "cluster",
            cluster,
            Path(repo.rel(kind_config(repo))),
            node_image,
            Path(repo.rel(kubeconfig)),
        )
    steps: list[Step] = [
        first,
        Run(
            "cluster",
            "wait: node Ready",
            ("kubectl", "wait", "--for=condition=Ready", "node", "--all", "--timeout=120s"),
            150,
        ),
    ]
    ours: list[flux.Release] = []
    namespaces: set[str] = set()
    claims: set[str] = set()
    layers_of_env = flux.layers(repo, env)
    model_namespaces = {r.namespace for la in layers_of_env for r in la.releases if r.local}
    for layer in layers_of_env:
        for rel in layer.releases:
            if rel.local:
                ours.append(rel)  # our chart: installed after the model is on its claim
            else:
                steps += install_release(repo, layer.name, rel, provider, refs)
        if layer.manifests:
            steps += apply_layer(repo, layer, provider, refs, model_namespaces)
            namespaces |= {
                o["metadata"]["name"] for o in layer.manifests if o["kind"] == "Namespace"
            }
            claims |= {
                o["metadata"]["name"]
                for o in layer.manifests
                if o["kind"] == "PersistentVolumeClaim"
            }
    deployed = models(repo, env, ours)
    verify: list[Step] = []
    scenarios: list[Step] = []  # after the checks: the rollout changes what they are about
    for rel, values_file in deployed:
        values = render.model_values(repo, values_file)
        source = repo.rel(values_file)
        store = model_store(repo, env, rel.name, rel.namespace, values, source, namespaces, claims)
        if provider == "node":
            store = [
                Apply(
                    s.layer,
                    s.title,
                    s.source,
                    tuple(node_plan.local_image(o, refs) for o in s.objects),
                )
                if isinstance(s, Apply)
                else s
                for s in store
            ]
        steps += store
        install = deploy(repo, rel.name, rel.namespace, values_file)[0]
        if provider == "node" and reliability:
            install = [node_plan.flux_origin(s) for s in install]
        steps += install
        if provider == "node":
            verify += node_plan.verify(repo, env, rel)
            if reliability:
                scenarios += node_plan.reliability(repo, rel, CANARY_PERCENT, scenario_names)
            continue
        verify.append(ResolveHost("verify", rel.name, rel.namespace))
        for protocol in ("v1", "v2"):
            verify += [
                Predict("verify", rel.name, protocol, rows, want)
                for rows, want in golden.predictions(repo, rel.name)
            ]
        verify.append(LoadTest("verify", env, rel.name, "v1"))
    steps += verify
    if provider in LOCAL:
        steps = without_containers(steps, real_node=provider == "node")
        applied = tuple(
            s
            for s in steps
            if isinstance(s, HelmInstall) or (isinstance(s, Apply) and s.layer != "model")
        )
        steps += [CheckCluster("check"), Reapply("check", applied), *scenarios]
        # Last: the rollout's edits change the InferenceService the steady state is about.
        steps += [
            ClusterCanary("canary", env, rel.name, rel.namespace, CANARY_PERCENT)
            for rel, _ in deployed
        ]
    if layers:
        unknown = layers - {s.layer for s in steps}
        if unknown:
            known = ", ".join(dict.fromkeys(s.layer for s in steps))
            raise RenderError(f"e2e: no layer {', '.join(sorted(unknown))} (layers: {known})")
        steps = only_layers(steps, layers)
    ingress = f"http://127.0.0.1:{INGRESS_NODE_PORT}"
    names = tuple(rel.name for rel, _ in deployed)
    namespace = deployed[0][0].namespace
    return Plan(repo, env, cluster, kubeconfig, namespace, ingress, tuple(steps), provider, names)
