"""Issue 28's leak, on a real cluster: the e2e dumps Secrets (`kubectl get secrets -o yaml`), the
objects of its checks, its diagnostics and every component's log into its report folder, which
CI uploads. Here one run of the e2e (kserve_gitops.e2e.run, the kwok provider, a cluster of this
test's own, `redaction`) holds a private key, a token and a password in Secrets (applied
server-side, and client-side so that kubectl's last-applied annotation repeats them), a
ConfigMap and a pod's environment, passes them on a command line, then fails a step so that
diagnostics are collected. Its report folder must scan clean with the pinned gitleaks and hold
none of the values in any form; each Secret is shown with its keys, the sha256 and the length of
each value."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kserve_gitops.base import redact
from kserve_gitops.checks import secret_scan
from kserve_gitops.e2e import provider, run
from kserve_gitops.e2e.steps import Apply, CheckCluster, Plan, Run, StartLocalCluster
from kserve_gitops.localcluster import binaries, controlplane
from tests import REPO
from tests.kwok_helpers import need_binaries

pytestmark = pytest.mark.kwok
CLUSTER = "redaction"  # its own slot: ports and pod addresses apart from dev/staging/prod's
NS = "leaky"


def make_secrets() -> dict[str, str]:
    """A private key, a token (JWT-shaped, as a ServiceAccount's) and a password, made here."""
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )

    def part(data: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    sig = base64.urlsafe_b64encode(hashlib.sha256(os.urandom(16)).digest()).decode().rstrip("=")
    token = f"{part({'alg': 'RS256', 'kid': 'k1'})}.{part({'sub': 'system:sa:leaky:x'})}.{sig}"
    return {"tls.key": key.decode(), "token": token, "password": "pw-" + os.urandom(6).hex()}


def forms(value: str) -> list[str]:
    """A value as it could leak: as it is, base64-encoded, any long line of it (a PEM body)."""
    lines = [ln for ln in value.splitlines() if len(ln) >= 20 and "-----" not in ln]
    return [value, base64.b64encode(value.encode()).decode(), *lines]


def fingerprint(value: str) -> str:
    return f"<redacted sha256={hashlib.sha256(value.encode()).hexdigest()} len={len(value)}>"


def objects(values: dict[str, str]) -> tuple[dict, ...]:
    meta = {"namespace": NS}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": "server-side", **meta},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", **meta},
        "data": {
            "server.pem": values["tls.key"],
            "settings.yaml": f"password: {values['password']}\n",
        },
    }
    pod = {
        "containers": [
            {
                "name": "app",
                "image": "busybox@sha256:" + "0" * 64,
                "env": [{"name": "API_TOKEN", "value": values["token"]}],
            }
        ]
    }
    labels = {"app": "leaky"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "leaky", **meta},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    return namespace, secret, config, deployment


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], dict[str, str], int]:
    need_binaries(
        lambda: binaries.locate(binaries.pinned(REPO)),
        lambda: binaries.locate([binaries.secret_scanner(REPO)], "`make gitleaks` builds it"),
    )
    values = make_secrets()
    work = tmp_path_factory.mktemp("redaction")
    client_side = work / "client-side.yaml"  # kubectl's last-applied annotation repeats it
    client_side.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "client-side", "namespace": NS},
                "stringData": values,
            }
        )
    )
    kubectl = ("kubectl", "-n", NS)
    steps = (
        StartLocalCluster("cluster", CLUSTER, 3),
        Apply(
            "secrets",
            "apply a Secret, a ConfigMap and a Deployment holding them",
            "test",
            objects(values),
        ),
        Run("secrets", "client-side apply", ("kubectl", "apply", "-f", str(client_side))),
        Run(
            "secrets",
            "a Secret from a command line",
            (
                *kubectl,
                "create",
                "secret",
                "generic",
                "cli",
                f"--from-literal=password={values['password']}",
            ),
        ),
        Run(
            "secrets",
            "the known leak: every Secret as YAML",
            ("kubectl", "get", "secrets", "-A", "-o", "yaml"),
        ),
        Run(
            "secrets",
            "one Secret as JSON",
            (*kubectl, "get", "secret", "client-side", "-o", "json"),
        ),
        CheckCluster("checks"),
        Run(
            "checks",
            "a step that fails: diagnostics are collected",
            (*kubectl, "get", "secret", "does-not-exist"),
        ),
    )
    kubeconfig = controlplane.kubeconfig_file(REPO, CLUSTER)
    plan = Plan(REPO, CLUSTER, f"kgops-{CLUSTER}", kubeconfig, NS, "", steps, "kwok")
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        # The plan starts no controller: the cluster needs the control plane's binaries only.
        patch.setattr(provider.controller_binaries, "ensure", lambda *_a, **_k: {})
        rc = run.run(plan, keep=False, reports=work / "reports", echo=lines.append)
    (folder,) = (work / "reports").glob("e2e-*")
    return folder, lines, values, rc


def test_the_report_scans_clean_and_holds_no_secret_value(
    report: tuple[Path, list[str], dict[str, str], int],
) -> None:
    folder, lines, values, rc = report
    summary = json.loads((folder / "summary.json").read_text())
    assert rc == run.EXIT_FAILED, "\n".join(lines[-30:])
    assert summary["failure"].startswith("step 8 (checks: a step that fails"), summary["failure"]
    assert "credential(s) in the report folder" not in summary["failure"]
    assert [s["status"] for s in summary["steps"]] == ["passed"] * 7 + ["failed"]
    scanned = f"credential scan of {folder} (gitleaks {REPO.versions['secretScan']['gitleaks']}"
    assert f"{scanned}, {secret_scan.CONFIG}): 0 finding(s)" in lines
    assert secret_scan.scan(REPO, folder) == []
    written = sorted(p for p in folder.rglob("*") if p.is_file())
    names = {p.relative_to(folder).as_posix() for p in written}
    # What the run wrote: the commands, the diagnostics of the failure, the cluster's state and
    # every component's log.
    assert {
        "commands.log",
        "plan.txt",
        "summary.json",
        "diagnostics/pods.txt",
        f"diagnostics/{NS}/pods-describe.txt",
        "cluster/events.json",
        "cluster/logs/kube-apiserver.log",
    } <= names, names
    for path in written:
        text = path.read_text(errors="replace")
        for name, value in values.items():
            assert not any(f in text for f in forms(value)), f"{name} in {path}"
    terminal = "\n".join(lines)
    for name, value in values.items():
        assert not any(f in terminal for f in forms(value)), f"{name} on the terminal"


def test_secrets_are_shown_with_keys_sha256_and_length(
    report: tuple[Path, list[str], dict[str, str], int],
) -> None:
    folder, lines, values, _rc = report
    log = (folder / "commands.log").read_text()
    dumps = [
        yaml.safe_load(part.split("\n", 2)[2])
        for part in log.split("\n$ ")
        if part.startswith("kubectl get secrets -A -o yaml\n")
    ]
    assert dumps, "the Secrets' dump is in commands.log"
    secrets = {
        s["metadata"]["name"]: s for s in dumps[0]["items"] if s["metadata"]["namespace"] == NS
    }
    expected = {k: fingerprint(v) for k, v in values.items()}
    assert secrets["server-side"]["data"] == expected
    assert secrets["client-side"]["data"] == expected
    assert secrets["cli"]["data"] == {"password": expected["password"]}
    applied = secrets["client-side"]["metadata"]["annotations"][
        "kubectl.kubernetes.io/last-applied-configuration"
    ]
    assert json.loads(applied)["stringData"] == expected
    masked = f"--from-literal=password={expected['password']}"
    assert masked in log and any(masked in line for line in lines)


def test_without_the_redaction_the_e2e_fails_naming_file_line_and_rule(
    report: tuple[Path, list[str], dict[str, str], int], tmp_path: Path
) -> None:
    """The same Secrets with kserve_gitops.base.redact switched off (the harness as it was): the
    run's last act, the credential scan of its report folder, fails it and names each file,
    line and rule, never the value."""
    values = make_secrets()
    steps = (
        StartLocalCluster("cluster", CLUSTER, 3),
        Apply("secrets", "apply a Secret", "test", objects(values)[:2]),
        Run("secrets", "every Secret as YAML", ("kubectl", "get", "secrets", "-A", "-o", "yaml")),
    )
    kubeconfig = controlplane.kubeconfig_file(REPO, CLUSTER)
    plan = Plan(REPO, CLUSTER, f"kgops-{CLUSTER}", kubeconfig, NS, "", steps, "kwok")
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(provider.controller_binaries, "ensure", lambda *_a, **_k: {})
        patch.setattr(redact, "text", lambda value: value)
        rc = run.run(plan, keep=False, reports=tmp_path / "reports", echo=lines.append)
    (folder,) = (tmp_path / "reports").glob("e2e-*")
    summary = json.loads((folder / "summary.json").read_text())
    assert rc == run.EXIT_FAILED and summary["result"] == "failed"
    assert [s["status"] for s in summary["steps"]] == ["passed"] * 3
    failure = summary["failure"]
    assert re.match(rf"\d+ credential\(s\) in the report folder {re.escape(str(folder))}:", failure)
    assert re.search(r"^  commands\.log:\d+: \[gitleaks:private-key\] ", failure, re.M), failure
    assert not any(f in failure for value in values.values() for f in forms(value))
    assert any(line.startswith("FAILED ") and "[gitleaks:private-key]" in line for line in lines)
