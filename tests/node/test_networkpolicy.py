"""The environment's NetworkPolicies of the `models` namespace enforced on the real node by
kube-router's firewall (kserve_gitops.node.netpol) and proven with connections between pods:

- a stand-in predictor (KServe's sklearnserver image serving sklearn-iris on 8080, and a
  queue-proxy stand-in: 8012/8013 forwarding to it, 9090 and 9091 answering stats) labelled as
  KServe labels an InferenceService's pods, and a pod in `models` that is no predictor;
- callers as one-shot pods: Knative's activator and autoscaler, the Istio ingress gateway,
  Prometheus (each in its namespace, with the labels the policy names), the activator's labels
  in another namespace, and a pod of `models` itself.

Each verdict names the policy that decides it. A throwaway copy of the namespace shows that the
probes can fail: with default-deny-ingress deleted the pod that is no predictor answers the
outside caller (the predictor does not: predictors-allow-callers alone still isolates it), with
both deleted the predictor answers. The per-policy table goes to the report
(.cache/e2e/netpol/networkpolicies.md) and the test's output. Needs root and the binaries and
images `make node-binaries images` build."""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from kserve_gitops.base.tools import Runner
from kserve_gitops.base.wait import wait_until
from kserve_gitops.e2e.provider import KwokCluster, run_env
from kserve_gitops.localcluster import binaries, controlplane
from kserve_gitops.node import binaries as node_binaries
from kserve_gitops.node import images
from kserve_gitops.node import policyprobe as pp
from kserve_gitops.repo import render
from tests import REPO
from tests.kwok_helpers import need_binaries

pytestmark = pytest.mark.node
CLUSTER = "netpol"
ENV = "dev"
NS = "models"
COPY = "models-throwaway"
OUTSIDE = "netpol-outside"
MODEL = "sklearn-iris"
DENY = "default-deny-ingress"
ALLOW = "predictors-allow-callers"
ISVC_LABEL = "serving.kserve.io/inferenceservice"
PREDICTOR = f"{MODEL}-predictor"
OTHER = "not-a-predictor"
PREDICT = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]})
PREDICT_PATH = f"/v1/models/{MODEL}:predict"

# The queue-proxy stand-in: 8012 and 8013 forward to the model server on 8080 (as queue-proxy
# does), 9090 and 9091 answer as its autoscaling stats and metrics ports.
QUEUE_PROXY = r"""
import http.server, threading, urllib.request
class Forward(http.server.BaseHTTPRequestHandler):
    def _go(self):
        n = int(self.headers.get("Content-Length") or 0)
        req = urllib.request.Request("http://127.0.0.1:8080" + self.path,
            data=self.rfile.read(n) if n else None, method=self.command,
            headers={"Content-Type": "application/json"})
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with direct.open(req, timeout=10) as resp:
            code, data = resp.status, resp.read()
        self.send_response(code); self.send_header("Content-Length", str(len(data)))
        self.end_headers(); self.wfile.write(data)
    do_GET = do_POST = _go
class Plain(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        data = ("port %d\n" % self.server.server_port).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(data)))
        self.end_headers(); self.wfile.write(data)
    do_POST = do_GET
ports = [int(p) for p in __import__("sys").argv[1].split(",")]
for port in ports:
    handler = Forward if port in (8012, 8013) and "forward" in __import__("sys").argv[2:] else Plain
    srv = http.server.ThreadingHTTPServer(("", port), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
threading.Event().wait()
"""


@dataclass
class Net:
    cluster: KwokCluster
    core: client.CoreV1Api
    net: client.NetworkingV1Api
    image: str
    report: Path
    policies: dict[str, dict[str, Any]]
    ips: dict[str, str] = field(default_factory=dict)
    results: list[pp.Result] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)  # finished probe pods
    rows: dict[str, pp.Row] = field(default_factory=dict)


def environment_policies() -> dict[str, dict[str, Any]]:
    """The NetworkPolicies of `models` as the environment applies them (its configs layer)."""
    layer = render.environment_dir(REPO, ENV) / "platform" / "configs"
    docs = render.kustomize_build(REPO, layer)
    found = {
        d["metadata"]["name"]: d
        for d in docs
        if d.get("kind") == "NetworkPolicy" and d["metadata"].get("namespace") == NS
    }
    assert {DENY, ALLOW} <= set(found), f"{REPO.rel(layer)}: NetworkPolicies {sorted(found)}"
    return found


def _server(namespace: str, name: str, labels: dict[str, str], image: str) -> dict[str, Any]:
    body = pp.pod_body(
        namespace,
        name,
        labels,
        image,
        ["python", "-c", QUEUE_PROXY, "8012,8013,8080,9090,9091"],
        restart="Always",
    )
    body["spec"]["containers"][0]["readinessProbe"] = {
        "tcpSocket": {"port": 8080},
        "periodSeconds": 1,
    }
    return body


def _predictor(image: str, models: Path) -> dict[str, Any]:
    labels = {ISVC_LABEL: MODEL, "component": "predictor"}
    body = pp.pod_body(NS, PREDICTOR, labels, image, [], restart="Always")
    main = body["spec"]["containers"][0]
    del main["command"]
    main |= {
        "name": "kserve-container",
        "args": [f"--model_name={MODEL}", "--model_dir=/mnt/models"],
        "volumeMounts": [{"name": "model", "mountPath": "/mnt/models", "readOnly": True}],
        "readinessProbe": {
            "httpGet": {"path": f"/v1/models/{MODEL}", "port": 8080},
            "periodSeconds": 1,
        },
    }
    proxy = copy.deepcopy(main)
    for key in ("args", "volumeMounts", "readinessProbe"):
        proxy.pop(key)
    proxy |= {
        "name": "queue-proxy",
        "command": ["python", "-c", QUEUE_PROXY, "8012,8013,9090,9091", "forward"],
    }
    body["spec"]["containers"].append(proxy)
    body["spec"]["volumes"] = [{"name": "model", "hostPath": {"path": str(models)}}]
    return body


def _start(env: Net, body: dict[str, Any]) -> None:
    meta = body["metadata"]
    env.core.create_namespaced_pod(meta["namespace"], body)
    env.ips[f"{meta['namespace']}/{meta['name']}"] = pp.wait_ready(
        env.core, meta["namespace"], meta["name"], 300
    )


def _apply_policy(env: Net, namespace: str, name: str) -> None:
    body = copy.deepcopy(env.policies[name])
    body["metadata"] = {"name": name, "namespace": namespace}
    env.net.create_namespaced_network_policy(namespace, body)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    need_binaries(
        lambda: binaries.locate(binaries.pinned(REPO)),
        lambda: binaries.locate(node_binaries.pinned(REPO)),
        lambda: images.locate(REPO, ["pause", "coredns", "sklearnserver"]),
        root=True,
    )
    policies = environment_policies()
    work = tmp_path_factory.mktemp("node-netpol")
    lines: list[str] = []
    cluster = KwokCluster(REPO, CLUSTER, lines.append, real_node=True)
    # The control plane and the node only: no controller runs in this module.
    bins = cluster.bins = binaries.locate(binaries.pinned(REPO))
    cluster.node_bins = binaries.locate(node_binaries.pinned(REPO))
    cluster.archives = images.locate(REPO, ["pause", "coredns", "sklearnserver"])
    kubeconfig = controlplane.kubeconfig_file(REPO, CLUSTER)
    runner = Runner(work / "commands.log", lines.append, run_env(kubeconfig, bins), REPO.root)
    report = controlplane.cluster_dir(REPO, CLUSTER).parent / f"{CLUSTER}-networkpolicies.md"
    # The model the stand-in predictor serves, readable by its non-root user.
    models = work / "model"
    models.mkdir()
    shutil.copy(REPO.root / "models" / MODEL / "v1" / "model.joblib", models / "model.joblib")
    os.chmod(work, 0o755)
    os.chmod(models, 0o755)
    os.chmod(models / "model.joblib", 0o644)
    cluster.start(runner)
    try:
        api = config.new_client_from_config(config_file=str(kubeconfig))
        env = Net(
            cluster,
            client.CoreV1Api(api),
            client.NetworkingV1Api(api),
            images.refs(REPO)["sklearnserver"],
            report,
            policies,
        )
        for ns in (NS, COPY, OUTSIDE, "knative-serving", "istio-system", "monitoring"):
            env.core.create_namespace({"metadata": {"name": ns}})
        for ns in (NS, COPY):
            for name in (DENY, ALLOW):
                _apply_policy(env, ns, name)
        _start(env, _predictor(env.image, models))
        _start(env, _server(NS, OTHER, {"app": "other"}, env.image))
        labels = {ISVC_LABEL: MODEL, "component": "predictor"}
        _start(env, _server(COPY, PREDICTOR, labels, env.image))
        _start(env, _server(COPY, OTHER, {"app": "other"}, env.image))
        for ns in (NS, COPY):
            _wait_policies(ns, PREDICTOR, [DENY, ALLOW])
            _wait_policies(ns, OTHER, [DENY])
        yield env
    finally:
        cluster.stop(keep=False)
        print("\n".join(lines[-40:]))
        assert not [line for line in cluster.node_undone if "NOT restored" in line], lines


def _wait_policies(namespace: str, pod: str, names: list[str]) -> None:
    """Until kube-router runs the pod's ingress through exactly the policies `names`."""
    wait_until(
        lambda: pp.policies_programmed(namespace, pod) == sorted(names),
        90,
        0.5,
        lambda: (
            f"kube-router running {namespace}/{pod} through {sorted(names) or 'no policy'} "
            f"(now {pp.policies_programmed(namespace, pod)})"
        ),
    )


def _target(env: Net, pod: str, port: int, ns: str = NS) -> pp.Target:
    ip = env.ips[f"{ns}/{pod}"]
    if pod == PREDICTOR and port in (8012, 8013):
        return pp.Target(f"{ns}/{pod}:{port} predict", ip, port, PREDICT_PATH, PREDICT)
    path = f"/v1/models/{MODEL}" if pod == PREDICTOR and port == 8080 else "/"
    return pp.Target(f"{ns}/{pod}:{port}", ip, port, path)


def _probe(env: Net, caller: pp.Caller, targets: list[pp.Target]) -> dict[str, pp.Result]:
    results = pp.probe(env.core, caller, env.image, targets, delete=False)
    env.kept.append((caller.namespace, caller.name))
    env.results += results
    print("\n".join(r.line() for r in results))
    return {r.target: r for r in results}


def _row(env: Net, policy: str) -> pp.Row:
    return env.rows.setdefault(policy, pp.Row(policy, []))


def _refused(env: Net, result: pp.Result, *deciding: str) -> None:
    """Refused (or timed out) within the bound, by the policies `deciding`."""
    why = f"{result.line()}: expected refused by {' and '.join(deciding)}"
    assert result.outcome in ("refused", "timed out"), why
    assert result.seconds <= pp.CONNECT_TIMEOUT_S + 1, why
    for policy in deciding:
        _row(env, policy).refused.append(result)


def _answered(env: Net, result: pp.Result, policy: str) -> None:
    why = f"{result.line()}: expected answered (allowed by {policy})"
    assert result.reached and result.detail.startswith("200"), why
    _row(env, policy).allowed.append(result)


def test_outside_namespace_is_refused(net: Net) -> None:
    """The activator's own labels from another namespace: no rule of predictors-allow-callers
    names that namespace, so default-deny-ingress and predictors-allow-callers both refuse it
    on every port; the pod that is no predictor only default-deny-ingress isolates."""
    caller = pp.Caller(OUTSIDE, "outside-activator", {"app": "activator"})
    got = _probe(
        net,
        caller,
        [_target(net, PREDICTOR, p) for p in (8012, 8080, 9090, 9091)]
        + [_target(net, OTHER, 8080)],
    )
    for port in (8012, 8080, 9090, 9091):
        _refused(net, got[_target(net, PREDICTOR, port).name], f"{NS}/{DENY}", f"{NS}/{ALLOW}")
    _refused(net, got[_target(net, OTHER, 8080).name], f"{NS}/{DENY}")


def test_same_namespace_is_refused(net: Net) -> None:
    caller = pp.Caller(NS, "curious", {"app": "curious"})
    got = _probe(net, caller, [_target(net, PREDICTOR, 8012), _target(net, OTHER, 8080)])
    _refused(net, got[_target(net, PREDICTOR, 8012).name], f"{NS}/{DENY}", f"{NS}/{ALLOW}")
    _refused(net, got[_target(net, OTHER, 8080).name], f"{NS}/{DENY}")


@pytest.mark.parametrize(
    ("namespace", "labels", "allowed", "refused"),
    [
        ("knative-serving", {"app": "activator"}, [8012, 8013], [8080, 9090]),
        ("istio-system", {"istio": "ingressgateway"}, [8012], [8080]),
        ("knative-serving", {"app": "autoscaler"}, [9090], [8080, 8012]),
        ("monitoring", {"app.kubernetes.io/name": "prometheus"}, [8080, 9091], [8012]),
    ],
    ids=["activator", "ingress-gateway", "autoscaler", "prometheus"],
)
def test_named_callers_reach_their_ports_only(
    net: Net, namespace: str, labels: dict[str, str], allowed: list[int], refused: list[int]
) -> None:
    """Each caller predictors-allow-callers names answers on the ports its rule lists (the
    predictions through the queue-proxy port), and is refused on the others."""
    name = next(iter(labels.values())).replace(".", "-") + "-probe"
    caller = pp.Caller(namespace, name, labels)
    got = _probe(net, caller, [_target(net, PREDICTOR, p) for p in allowed + refused])
    for port in allowed:
        result = got[_target(net, PREDICTOR, port).name]
        _answered(net, result, f"{NS}/{ALLOW}")
        if port in (8012, 8013):  # sklearnserver's answer through the queue-proxy stand-in
            assert result.body.replace(" ", "") == '{"predictions":[0]}', result.body
    for port in refused:
        _refused(net, got[_target(net, PREDICTOR, port).name], f"{NS}/{DENY}", f"{NS}/{ALLOW}")


def test_throwaway_copy_without_default_deny(net: Net) -> None:
    """Deleting default-deny-ingress opens the pod no other policy selects, not the predictor:
    predictors-allow-callers alone still isolates it. Deleting that one too opens it. The same
    outside caller as above, so the refusals above are shown able to fail."""
    net.net.delete_namespaced_network_policy(DENY, COPY)
    _wait_policies(COPY, OTHER, [])
    _wait_policies(COPY, PREDICTOR, [ALLOW])
    caller = pp.Caller(OUTSIDE, "outside-after-deny", {"app": "activator"})
    got = _probe(
        net, caller, [_target(net, OTHER, 8080, COPY), _target(net, PREDICTOR, 8012, COPY)]
    )
    _answered(net, got[_target(net, OTHER, 8080, COPY).name], f"{COPY}/(no {DENY})")
    _refused(net, got[_target(net, PREDICTOR, 8012, COPY).name], f"{COPY}/{ALLOW}")
    net.net.delete_namespaced_network_policy(ALLOW, COPY)
    _wait_policies(COPY, PREDICTOR, [])
    caller = pp.Caller(OUTSIDE, "outside-after-both", {"app": "activator"})
    got = _probe(net, caller, [_target(net, PREDICTOR, 8012, COPY)])
    _answered(net, got[_target(net, PREDICTOR, 8012, COPY).name], f"{COPY}/(no policy)")


def test_selectors_match_the_pods_they_are_meant_for(net: Net) -> None:
    """On the live cluster: default-deny-ingress selects every pod of `models`,
    predictors-allow-callers exactly the predictor, and each of its peers the caller it names
    (the finished probe pods still carry their labels), none the outside caller; kube-router
    runs the predictor's traffic through both policies."""
    as_api = {
        name: client.ApiClient().sanitize_for_serialization(
            net.net.read_namespaced_network_policy(name, NS)
        )
        for name in (DENY, ALLOW)
    }
    every = sorted(f"{NS}/{p.metadata.name}" for p in net.core.list_namespaced_pod(NS).items)
    deny = pp.selected(net.core, as_api[DENY])
    allow = pp.selected(net.core, as_api[ALLOW])
    assert deny == every, f"{DENY} selects {deny}, the namespace has {every}"
    assert allow == [f"{NS}/{PREDICTOR}"], f"{ALLOW} selects {allow}"
    _row(net, f"{NS}/{DENY}").selected = deny
    _row(net, f"{NS}/{ALLOW}").selected = allow
    peers = dict(pp.peers(net.core, as_api[ALLOW]))
    _row(net, f"{NS}/{ALLOW}").peers = [f"{k}: {', '.join(v) or '-'}" for k, v in peers.items()]
    print("\n".join(f"{ALLOW} peer {k}: {v}" for k, v in peers.items()))
    expect = {
        "knative-serving/activator": "app=activator",
        "istio-system/ingressgateway": "istio=ingressgateway",
        "knative-serving/autoscaler": "app=autoscaler",
        "monitoring/prometheus": "app.kubernetes.io/name=prometheus",
    }
    for caller, selector in expect.items():
        matched = [pods for what, pods in peers.items() if f"pods[{selector}]" in what]
        assert matched and all(matched), f"{ALLOW}: no peer with {selector} matched {caller}"
        assert all(p.startswith(caller.split("/")[0] + "/") for m in matched for p in m)
    assert not [p for pods in peers.values() for p in pods if p.startswith(f"{OUTSIDE}/")]
    for pod in (PREDICTOR, OTHER):
        print(f"kube-router chains of {NS}/{pod}: {pp.policies_programmed(NS, pod)}")
    assert pp.policies_programmed(NS, PREDICTOR) == sorted([DENY, ALLOW])
    assert pp.policies_programmed(NS, OTHER) == [DENY]


def test_report(net: Net) -> None:
    """The per-policy table (written last: every probe above adds its rows)."""
    for namespace, name in net.kept:
        pp.remove(net.core, namespace, name)
    order = [f"{NS}/{DENY}", f"{NS}/{ALLOW}"]
    rows = [net.rows[k] for k in order if k in net.rows]
    rows += [row for key, row in net.rows.items() if key not in order]
    text = (
        "# NetworkPolicies on the real node (kube-router firewall)\n\n"
        f"Refused: connection refused or timed out within {pp.CONNECT_TIMEOUT_S:g}s.\n\n"
        + pp.table(rows)
        + "\n## Every probe\n\n"
        + "\n".join(f"- {r.line()}" for r in net.results)
        + "\n"
    )
    net.report.write_text(text)
    print(f"\n{net.report}:\n{text}")
    assert rows and all(r.allowed or r.refused for r in rows)
