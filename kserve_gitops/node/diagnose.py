"""Why a pod on the real node is not running: its containers' states as the kubelet reports
them (waiting reasons such as ErrImagePull or CreateContainerConfigError, terminations such as
OOMKilled or a non-zero exit with the end of the container's log) and the Warning events about
it, in one message that names the pod and the container."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from kserve_gitops.base.wait import wait_until

# Waiting reasons that do not go away by waiting (the kubelet retries them with back-off).
STUCK = {
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
}


@dataclass(frozen=True)
class Failure:
    pod: str  # namespace/name
    container: str
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"pod {self.pod}, container {self.container}: {self.reason}: {self.detail}"


def _log_tail(core: client.CoreV1Api, ns: str, pod: str, container: str) -> str:
    try:
        text = core.read_namespaced_pod_log(
            pod, ns, container=container, previous=True, tail_lines=5
        )
    except ApiException:
        try:
            text = core.read_namespaced_pod_log(pod, ns, container=container, tail_lines=5)
        except ApiException as exc:
            return f"(no log: HTTP {exc.status})"
    return " | ".join(line.strip() for line in str(text).splitlines() if line.strip())[-600:]


def _events(core: client.CoreV1Api, ns: str, pod: str) -> list[str]:
    found = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={pod}").items
    return [f"{e.reason}: {e.message}" for e in found if e.type == "Warning"]


def failure(core: client.CoreV1Api, ns: str, name: str) -> Failure | None:
    """The first container of the pod that is stuck or has terminated abnormally, else None
    (running, starting, or succeeded)."""
    pod: Any = core.read_namespaced_pod(name, ns)
    ref = f"{ns}/{name}"
    statuses = [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]
    for st in statuses:
        waiting = st.state.waiting if st.state else None
        last = st.last_state.terminated if st.last_state else None
        done = st.state.terminated if st.state else None
        for term in (done, last):
            if term is not None and (term.reason == "OOMKilled" or term.exit_code not in (0, None)):
                log = _log_tail(core, ns, name, st.name)
                detail = f"exit code {term.exit_code}, restarts {st.restart_count}; log: {log}"
                return Failure(ref, st.name, term.reason or "Error", detail)
        if waiting is not None and waiting.reason in STUCK:
            events = "; ".join(_events(core, ns, name)[-2:])
            detail = waiting.message or events or "(no message)"
            return Failure(ref, st.name, waiting.reason, detail)
    return None


def wait_failure(
    core: client.CoreV1Api, ns: str, name: str, timeout_s: float, poll_s: float = 1.0
) -> Failure:
    """The pod's failure once the kubelet reports one; TimeoutError when it runs fine."""
    return wait_until(
        lambda: failure(core, ns, name), timeout_s, poll_s, f"a failure of pod {ns}/{name}"
    )
