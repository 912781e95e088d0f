"""The redaction every writer of the harness goes through (kserve_gitops.base.redact): Secrets keep
their keys with the sha256 and length of each value; keys, tokens and credential-named values go
wherever they appear. The secrets are made at run time, so this file holds none (the tree scan
would find it)."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kserve_gitops.base import redact
from kserve_gitops.base.tools import CommandError, Runner


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


@pytest.fixture(scope="module")
def secrets() -> dict[str, str]:
    """A private key, a token (JWT-shaped, as a ServiceAccount's) and a password."""
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    part = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")  # noqa: E731
    token = ".".join(
        [
            part({"alg": "RS256", "kid": "k1"}),
            part({"sub": "system:serviceaccount:models:x"}),
            base64.urlsafe_b64encode(hashlib.sha256(b"sig").digest()).decode().rstrip("="),
        ]
    )
    return {"tls.key": key.decode(), "token": token, "password": "hun" + "ter2-" + "Xq9"}


def secret_object(values: dict[str, str]) -> dict:
    applied = {"apiVersion": "v1", "kind": "Secret", "data": {"password": _b64(values["password"])}}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "creds",
            "namespace": "models",
            "annotations": {redact.LAST_APPLIED: json.dumps(applied)},
        },
        "type": "Opaque",
        "data": {k: _b64(v) for k, v in values.items()},
    }


def leaked(text: str, values: dict[str, str]) -> list[str]:
    """Which values (as they are, base64-encoded, or a line of the key's body) `text` holds."""
    found = []
    for name, value in values.items():
        forms = [value, _b64(value)] + [ln for ln in value.splitlines() if len(ln) > 20]
        found += [name for form in forms if form in text]
    return sorted(set(found))


def fingerprint(value: str) -> str:
    return f"<redacted sha256={hashlib.sha256(value.encode()).hexdigest()} len={len(value)}>"


def test_a_secret_dump_keeps_its_keys_with_sha256_and_length(secrets: dict[str, str]) -> None:
    listing = {"apiVersion": "v1", "kind": "List", "items": [secret_object(secrets)]}
    for dumped, load in (
        (json.dumps(listing, indent=4), json.loads),
        (yaml.safe_dump(listing), yaml.safe_load),
    ):
        out = redact.text(dumped)
        assert leaked(out, secrets) == []
        item = load(out)["items"][0]
        assert item["data"] == {k: fingerprint(v) for k, v in secrets.items()}
        applied = json.loads(item["metadata"]["annotations"][redact.LAST_APPLIED])
        assert applied["data"] == {"password": fingerprint(secrets["password"])}
        assert item["metadata"]["name"] == "creds"
        assert redact.text(out) == out  # idempotent


def test_string_data_multi_documents_and_unparseable_yaml(secrets: dict[str, str]) -> None:
    string_data = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "stringData": {"password": secrets["password"]},
    }
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c"},
        "data": {"a": "b"},
    }
    docs = yaml.safe_dump_all([config, string_data])
    out = redact.text(docs)
    assert leaked(out, secrets) == []
    assert next(iter(yaml.safe_load_all(out))) == config  # the other document untouched
    # helm's output with a line that is not YAML: each `data:` value below it, by indentation.
    broken = "kind: Secret\nmetadata: {name: s\ndata:\n  password: " + _b64(secrets["password"])
    out = redact.text(broken + "\n")
    assert leaked(out, secrets) == []
    assert f"  password: {fingerprint(secrets['password'])}" in out


def test_keys_and_tokens_wherever_they_appear(secrets: dict[str, str]) -> None:
    key, token, password = secrets["tls.key"], secrets["token"], secrets["password"]
    lines = [
        key,  # a PEM key in a log
        f"client-key-data: {_b64(key)}",  # a kubeconfig
        f'{{"caBundle": "x", "blob": "{_b64(key)}"}}',  # base64 anywhere
        f"I1207 authenticated with {token}",
        f"Authorization: Bearer {token}",
        f"$ kubectl create secret generic s --from-literal=password={password}",
        f"$ helm registry login --password {password} --username u",
        f"password: {password}",
        f'"apiToken": "{password}"',
        f"https://admin:{password}@registry.example/",
        json.dumps({"env": [{"name": "API_TOKEN", "value": password}]}),
        f"  - name: DB_PASSWORD\n    value: {password}",
    ]
    out = redact.text("\n".join(lines))
    assert leaked(out, secrets) == [], out
    assert "--from-literal=password=<redacted sha256=" in out
    assert "--username u" in out  # the rest of a command line stays
    assert '"name": "API_TOKEN"' in out


def test_what_is_no_secret_stays() -> None:
    text = "\n".join(
        [
            "secretName: kserve-webhook-server-cert",
            "automountServiceAccountToken: false",
            "--token-auth-file=/etc/kubernetes/tokens.csv",
            "--service-account-key-file=/pki/sa.pub",
            "password: ${DB_PASSWORD}",
            '"secretKeyRef": {"name": "s", "key": "password"}',
            "caBundle: " + _b64("-----BEGIN CERTIFICATE-----\n" + "A" * 64 + "\n"),
            "expirationSeconds: 3600",
        ]
    )
    assert redact.text(text) == text


def test_runner_log_terminal_and_errors_carry_no_secret(
    tmp_path: Path, secrets: dict[str, str]
) -> None:
    """A command that prints a Secret as `kubectl get secrets -o yaml` does (the leak of issue
    28): its caller gets the output as it was; the log and the terminal get it redacted."""
    dump = tmp_path / "secret.yaml"
    dump.write_text(yaml.safe_dump(secret_object(secrets)))
    lines: list[str] = []
    runner = Runner(tmp_path / "commands.log", lines.append)
    cat = [sys.executable, "-c", f"print(open({str(dump)!r}).read())"]
    out = runner.run([*cat, f"--password={secrets['password']}"])
    assert yaml.safe_load(out)["data"]["token"] == _b64(secrets["token"])
    runner.run([*cat], stream=True)
    with pytest.raises(CommandError) as failed:
        runner.run([sys.executable, "-c", f"import sys; print({secrets['token']!r}); sys.exit(3)"])
    log = (tmp_path / "commands.log").read_text()
    assert "exit 3" in log and "kind: Secret" in log
    for where in (log, "\n".join(lines), str(failed.value)):
        assert leaked(where, secrets) == [], where


def test_copies_and_sweeps_redact_every_text_file(tmp_path: Path, secrets: dict[str, str]) -> None:
    logs = tmp_path / "logs"
    (logs / "sub").mkdir(parents=True)
    (logs / "kube-apiserver.log").write_text(f"token {secrets['token']}\n")
    (logs / "sub" / "webhook.log").write_text(secrets["tls.key"])
    (logs / "plot.png").write_bytes(b"\x89PNG\0\0binary")
    redact.copy_tree(logs, tmp_path / "report" / "logs")
    copied = {
        p.relative_to(tmp_path / "report").as_posix(): p.read_bytes()
        for p in (tmp_path / "report").rglob("*")
        if p.is_file()
    }
    assert sorted(copied) == ["logs/kube-apiserver.log", "logs/plot.png", "logs/sub/webhook.log"]
    assert copied["logs/plot.png"] == b"\x89PNG\0\0binary"
    assert all(leaked(v.decode(errors="replace"), secrets) == [] for v in copied.values())
    redact.write_text(tmp_path / "report" / "summary.json", json.dumps({"p": secrets["token"]}))
    (tmp_path / "report" / "locust.csv").write_text(f"GET,/x?token={secrets['password']},1\n")
    redact.sweep(tmp_path / "report")
    for path in (tmp_path / "report").rglob("*.*"):
        assert leaked(path.read_text(errors="replace"), secrets) == [], path
