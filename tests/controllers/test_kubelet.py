"""What a controller process gets from the kwok pod it stands in for, as a kubelet would give
it (kserve_gitops.controllers.kubelet)."""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any

from kserve_gitops.controllers import kubelet


class FakeCore:
    def read_namespaced_config_map(self, name: str, ns: str) -> Any:
        assert (name, ns) == ("settings", "kserve")
        return SimpleNamespace(data={"LEVEL": "debug", "MODE": "Serverless"})

    def read_namespaced_secret(self, name: str, ns: str) -> Any:
        assert (name, ns) == ("creds", "kserve")
        return SimpleNamespace(data={"TOKEN": base64.b64encode(b"s3cr3t").decode()})


POD = {
    "metadata": {"name": "kserve-controller-manager-abc", "namespace": "kserve"},
    "spec": {"serviceAccountName": "kserve-controller-manager", "nodeName": "kwok-dev-1"},
    "status": {"podIP": "198.18.0.7"},
}


def test_env_is_built_as_the_kubelet_builds_it() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "MODE"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "TOKEN"}}},
            {"name": "PLAIN", "value": "x"},
        ],
    }
    env = kubelet.resolve_env(container, POD, FakeCore())  # type: ignore[arg-type]
    assert env == {
        "CFG_LEVEL": "debug",
        "CFG_MODE": "Serverless",
        "POD_NAME": "kserve-controller-manager-abc",
        "POD_NAMESPACE": "kserve",
        "POD_IP": "198.18.0.7",
        "MODE": "Serverless",
        "TOKEN": "s3cr3t",
        "PLAIN": "x",
    }
