"""NetworkPolicies proven on the live cluster: which pods each policy's selectors match, and
what a connection from a caller pod to a selected pod's port does (answered, refused, timed
out), as one-shot probe pods on the real node whose verdicts come back through the API
(the container's termination message: no exec, no logs, no port-forward needed).

    selected(core, policy)             # the pods of its namespace its podSelector matches
    peers(core, policy)                # per ingress rule: the pods its `from` selectors match
    probe(core, ns, name, labels, image, targets)   # [Result] from a pod with those labels
    table(rows)                        # the per-policy Markdown table of the report
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from kserve_gitops.base import tables
from kserve_gitops.base.wait import wait_until
from kserve_gitops.node.config import NODE_LABEL, NODE_VALUE, TOLERATION

# How long one connection may take before the probe calls it timed out: a refused or dropped
# connection must fail within this bound.
CONNECT_TIMEOUT_S = 3.0

# Run by the probe pod (the image's python, standard library only): every target in turn,
# the verdicts as JSON in the termination message.
PROBE_SCRIPT = r"""
import json, socket, sys, time, urllib.error, urllib.request
time.sleep(float(sys.argv[3]))  # the policy engine's sync of this pod first (see probe())
out = []
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
for t in json.loads(sys.argv[1]):
    start = time.monotonic()
    url = "http://%s:%d%s" % (t["host"], t["port"], t["path"])
    data = t["body"].encode() if t.get("body") else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    r = {"target": t["name"]}
    try:
        with direct.open(req, timeout=float(sys.argv[2])) as resp:
            r.update(outcome="answered", status=resp.status, body=resp.read(160).decode())
    except urllib.error.HTTPError as e:
        r.update(outcome="answered", status=e.code, body=e.read(160).decode())
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, (socket.timeout, TimeoutError)) or "timed out" in str(reason):
            r.update(outcome="timed out", error=str(reason))
        elif isinstance(reason, ConnectionRefusedError):
            r.update(outcome="refused", error=str(reason))
        else:
            r.update(outcome="unreachable", error=str(reason))
    r["seconds"] = round(time.monotonic() - start, 2)
    out.append(r)
open("/dev/termination-log", "w").write(json.dumps(out))
"""


@dataclass(frozen=True)
class Target:
    """A port of a pod to call: `name` as the report shows it."""

    name: str
    host: str
    port: int
    path: str = "/"
    body: str = ""


@dataclass
class Result:
    caller: str  # namespace/pod (labels)
    target: str
    outcome: str  # answered | refused | timed out | unreachable
    seconds: float
    detail: str = ""  # the HTTP status, or the error
    body: str = ""  # the first bytes of the answer

    @property
    def reached(self) -> bool:
        return self.outcome == "answered"

    def line(self) -> str:
        return f"{self.caller} -> {self.target}: {self.outcome} in {self.seconds:g}s {self.detail}"


def selector_string(selector: Mapping[str, Any] | None) -> str:
    """A LabelSelector as the API's label_selector query (`{}`: every object, '')."""
    selector = selector or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            parts.append(f"{key} {'in' if op == 'In' else 'notin'} ({','.join(values)})")
    return ",".join(parts)


def _pods(core: client.CoreV1Api, namespace: str, selector: str) -> list[str]:
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return sorted(
        f"{namespace}/{p.metadata.name}" for p in pods if p.metadata.deletion_timestamp is None
    )


def selected(core: client.CoreV1Api, policy: Mapping[str, Any]) -> list[str]:
    """The pods (namespace/name) of the policy's namespace that its podSelector matches."""
    meta, spec = policy["metadata"], policy["spec"]
    return _pods(core, meta["namespace"], selector_string(spec.get("podSelector")))


def peers(core: client.CoreV1Api, policy: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """Per ingress peer (namespaceSelector + podSelector): its description and the pods it
    matches on the live cluster. ipBlock peers are listed with no pods."""
    out = []
    for rule in policy["spec"].get("ingress") or []:
        ports = ",".join(str(p.get("port")) for p in rule.get("ports") or []) or "all"
        for peer in rule.get("from") or []:
            if "ipBlock" in peer:
                out.append((f"ipBlock {peer['ipBlock']['cidr']} -> {ports}", []))
                continue
            ns_sel = peer.get("namespaceSelector")
            if ns_sel is None:
                namespaces = [policy["metadata"]["namespace"]]
            else:
                found = core.list_namespace(label_selector=selector_string(ns_sel)).items
                namespaces = [n.metadata.name for n in found]
            pod_sel = selector_string(peer.get("podSelector"))
            pods = [p for ns in namespaces for p in _pods(core, ns, pod_sel)]
            what = f"ns[{selector_string(ns_sel)}] pods[{pod_sel}] -> {ports}"
            out.append((what, pods))
    return out


def pod_body(
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    image: str,
    command: Sequence[str],
    restart: str = "Never",
) -> dict[str, Any]:
    """A pod on the real node (its label as node selector, its taint tolerated), non-root."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "nodeSelector": {NODE_LABEL: NODE_VALUE},
            "tolerations": [TOLERATION],
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": list(command),
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def wait_ready(core: client.CoreV1Api, namespace: str, name: str, timeout_s: float) -> str:
    """The pod's IP once it is Ready; TimeoutError saying its last phase otherwise."""
    phase = "?"

    def ready_ip() -> str | None:
        nonlocal phase
        pod = core.read_namespaced_pod(name, namespace)
        phase = pod.status.phase
        conds = {c.type: c.status for c in pod.status.conditions or []}
        return (
            str(pod.status.pod_ip) if conds.get("Ready") == "True" and pod.status.pod_ip else None
        )

    return wait_until(
        ready_ip, timeout_s, 1, lambda: f"pod {namespace}/{name} to be Ready (phase {phase})"
    )


@dataclass
class Caller:
    namespace: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def shown(self) -> str:
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return f"{self.namespace}/{self.name}" + (f" ({labels})" if labels else "")


def probe(
    core: client.CoreV1Api,
    caller: Caller,
    image: str,
    targets: Sequence[Target],
    timeout_s: float = 180,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    delete: bool = True,
    settle_s: float = 15,
) -> list[Result]:
    """Start a one-shot pod as `caller` that calls every target once, and return its verdicts;
    the pod is deleted afterwards unless `delete` is False (a finished pod still matches the
    policies' peer selectors, for the selector check). The pod waits `settle_s` before its
    first call, and its verdicts count only if kube-router wrote the caller's own firewall
    chain before then: the same full sync puts its address in the ipsets of the peers that
    select it, so no verdict is taken before the engine knows the caller."""
    spec = [
        {"name": t.name, "host": t.host, "port": t.port, "path": t.path, "body": t.body}
        for t in targets
    ]
    command = [
        "python",
        "-c",
        PROBE_SCRIPT,
        json.dumps(spec),
        str(connect_timeout_s),
        str(settle_s),
    ]
    body = pod_body(caller.namespace, caller.name, caller.labels, image, command)
    created = time.monotonic()
    core.create_namespaced_pod(caller.namespace, body)
    synced_after: float | None = None
    phase = "?"

    def terminated() -> client.V1ContainerStateTerminated | None:
        """The probe container's terminated state, once it exited."""
        nonlocal synced_after, phase
        if synced_after is None and pod_chain(caller.namespace, caller.name):
            synced_after = time.monotonic() - created
        pod = core.read_namespaced_pod(caller.name, caller.namespace)
        phase = pod.status.phase
        return next(
            (
                s.state.terminated
                for s in pod.status.container_statuses or []
                if s.state and s.state.terminated
            ),
            None,
        )

    try:
        term = wait_until(
            terminated,
            timeout_s,
            1,
            lambda: f"the verdicts of probe {caller.shown} (phase {phase})",
        )
        if synced_after is None or synced_after >= settle_s:
            raise RuntimeError(
                f"probe {caller.shown}: kube-router had not programmed the caller "
                f"before its probes ran ({settle_s:g}s after its creation): no verdict"
            )
        if not term.message:
            raise RuntimeError(
                f"probe {caller.shown} exited {term.exit_code} ({term.reason}) without verdicts"
            )
        return [
            Result(
                caller.shown,
                r["target"],
                r["outcome"],
                r["seconds"],
                str(r.get("status") or r.get("error") or ""),
                str(r.get("body") or ""),
            )
            for r in json.loads(term.message)
        ]
    finally:
        if delete:
            remove(core, caller.namespace, caller.name)


def remove(core: client.CoreV1Api, namespace: str, name: str) -> None:
    try:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _filter_table(attempts: int = 10) -> str:
    """`iptables-save -t filter`, again when it fails: it exited 2 once here while kube-router
    and kube-proxy were rewriting the table (likely the nf_tables ruleset changing during the
    dump)."""
    for _ in range(attempts - 1):
        proc = subprocess.run(["iptables-save", "-t", "filter"], capture_output=True, text=True)
        if proc.returncode == 0:
            return proc.stdout
        time.sleep(0.2)
    return subprocess.run(
        ["iptables-save", "-t", "filter"], capture_output=True, text=True, check=True
    ).stdout


def pod_chain(namespace: str, pod: str) -> bool:
    """Whether kube-router's last full sync included the pod (its firewall chain exists)."""
    return f"POD name:{pod} namespace: {namespace}" in _filter_table()


def policies_programmed(namespace: str, pod: str) -> list[str]:
    """The policies kube-router runs the pod's traffic through: the `run through nw policy`
    rules of the pod's firewall chain. kube-router gives every local pod a chain ending in
    REJECT; a pod no policy selects runs through its default chain instead, which accepts."""
    dump = _filter_table()
    chains = {
        line.split()[1]
        for line in dump.splitlines()
        if f"POD name:{pod} namespace: {namespace}" in line and line.startswith("-A ")
    }
    found = []
    for line in dump.splitlines():
        parts = line.split()
        if (
            len(parts) > 1
            and parts[0] == "-A"
            and parts[1] in chains
            and "run through nw policy" in line
        ):
            found.append(line.split("run through nw policy ", 1)[1].split('"')[0])
    return sorted(set(found))


@dataclass
class Row:
    """One policy of the report: what it selects, the peers its rules name, and the probes it
    decided."""

    policy: str  # namespace/name
    selected: list[str]
    allowed: list[Result] = field(default_factory=list)
    refused: list[Result] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)  # each `from` peer: the pods it matches


def table(rows: Sequence[Row]) -> str:
    def cell(items: Sequence[str]) -> str:
        return "<br>".join(items) if items else "-"

    head = [
        "policy",
        "pods it selects (live)",
        "its peers and the pods they match (live)",
        "allowed probes (answered)",
        "refused probes",
    ]
    cells = [
        [
            row.policy,
            cell(row.selected),
            cell(row.peers),
            cell([_short(r) for r in row.allowed]),
            cell([_short(r) for r in row.refused]),
        ]
        for row in rows
    ]
    return "\n".join(tables.markdown(cells, head)) + "\n"


def _short(result: Result) -> str:
    return f"{result.caller} → {result.target}: {result.outcome} ({result.seconds:g}s)"
