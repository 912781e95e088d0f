"""The e2e as data: the ordered steps `kgops e2e --plan` prints and `kgops e2e` executes, so the
plan the tests check is the run CI performs.

Versions and values come from the platform declarations (the Flux HelmReleases under clusters/
and versions.yaml, read through kserve_gitops.repo.flux); each layer's steps come from
kserve_gitops.e2e.layer_plan. This module puts them in order after the cluster's own and adds,
for every model the environment deploys with our chart, its delivery onto the claim, its
install and the predictions of e2e/predictions/<model>.yaml, then what the provider runs of
them and the checks."""

from __future__ import annotations

from pathlib import Path

from kserve_gitops.e2e import golden, node_plan
from kserve_gitops.e2e.layer_plan import LOCAL, apply_layer, install_release
from kserve_gitops.e2e.model_steps import ClusterCanary, LoadTest, Predict, ResolveHost
from kserve_gitops.e2e.model_store import model_store
from kserve_gitops.e2e.steps import (
    Apply,
    CheckCluster,
    CreateCluster,
    HelmInstall,
    NotRun,
    ObserveChain,
    Plan,
    Poll,
    Reapply,
    Run,
    StartLocalCluster,
    Step,
)
from kserve_gitops.repo import Repo, flux, render
from kserve_gitops.repo.render import Obj, RenderError

PROVIDERS = ("kind", "kwok", "node")
INGRESS_NODE_PORT = 31080
# The canary share the kwok e2e rolls out (and back) on the running InferenceService.
CANARY_PERCENT = 10
# Why the kwok provider cannot run a step (kwok pods run no containers).
NO_CONTAINERS = "kwok pods run no containers"


def kind_config(repo: Repo) -> Path:
    return repo.e2e / "kind-config.yaml"


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
