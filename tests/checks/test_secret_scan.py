"""The credential scan is gitleaks at the pinned version with config/gitleaks.toml: the tree
scans clean; a key, a cloud token or a literal password planted in a repository copy is found
by `kgops policy` with its file, line and rule; an allowlist entry needs its reason; a report
folder with a leak is named file by file. Secrets are made at run time: none is in this file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kserve_gitops.checks import credentials, secret_scan
from kserve_gitops.localcluster import binaries
from kserve_gitops.repo import Repo
from kserve_gitops.repo.render import RenderError
from tests import REPO
from tests.broken_copy import run_policy


@pytest.fixture(scope="module", autouse=True)
def gitleaks() -> Path:
    """The pinned gitleaks, built by `make gitleaks` (a dependency of `make test`)."""
    try:
        found = binaries.locate([binaries.secret_scanner(REPO)], "`make gitleaks` builds it")
    except binaries.BuildError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    return found["gitleaks"]


def private_key() -> str:
    return (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        .decode()
    )


def aws_key() -> str:
    return "AKIA" + "QYLPMN5HHHFPZAM2"  # the shape of an access key id, put together here


def plant_key(root: Path) -> tuple[str, int]:
    """A Secret manifest with a private key in stringData, beside the security layer's
    manifests; (its path, the line of the key)."""
    rel = "platform/security/webhook-tls.yaml"
    body = "\n".join("    " + line for line in private_key().splitlines())
    text = (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: webhook-tls\n  namespace: models\n"
        f"type: kubernetes.io/tls\nstringData:\n  tls.key: |\n{body}\n"
    )
    (root / rel).write_text(text)
    return rel, 9


def test_the_tree_scans_clean_with_the_pinned_gitleaks(
    gitleaks: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert secret_scan.scan(REPO, REPO.root) == []
    assert f"/gitleaks/{REPO.versions['secretScan']['gitleaks']}/" in str(gitleaks)
    proc = run_policy(REPO.root, capsys, "--rules")
    assert "gitleaks v8." in proc.stdout and secret_scan.CONFIG in proc.stdout


def test_a_planted_key_is_found_by_policy_with_file_and_line(
    repo_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rel, line = plant_key(repo_copy)
    notes = repo_copy / "environments/dev/notes.yaml"
    notes.write_text(f"aws: {aws_key()}\npassword: hunter2\nref: ${{SECRET}}\n")
    found = {(v.rule, v.where) for v in credentials.scan_repository(Repo(repo_copy))}
    assert found == {
        ("gitleaks:private-key", f"{rel}:{line}"),
        ("gitleaks:aws-access-token", "environments/dev/notes.yaml:1"),
        ("gitleaks:credential-literal", "environments/dev/notes.yaml:2"),
    }
    proc = run_policy(repo_copy, capsys, "--env", "dev")
    proc.assert_fails_with([f"{rel}:{line}: line: [gitleaks:private-key]"], on_line_with=rel)
    proc.assert_fails_with(
        ["environments/dev/notes.yaml:2: line: [gitleaks:credential-literal]"],
        on_line_with="notes.yaml:2",
    )
    assert "hunter2" not in proc.stderr + proc.stdout  # gitleaks runs with --redact


def test_the_allowlist_takes_an_entry_with_its_reason_only(repo_copy: Path) -> None:
    rel, _line = plant_key(repo_copy)
    config = repo_copy / secret_scan.CONFIG
    original = config.read_text()
    config.write_text(
        original + "\n[[allowlists]]\n"
        'description = "a throwaway key of a parser fixture"\n'
        f"paths = ['''^{rel}$''']\n"
    )
    assert credentials.scan_repository(Repo(repo_copy)) == []
    config.write_text(original + f"\n[[allowlists]]\npaths = ['''^{rel}$''']\n")
    index = original.count("\n[[allowlists]]")  # the entry appended last
    with pytest.raises(
        RenderError, match=rf"allowlists\[{index}\]: an allowlist entry needs its reason"
    ):
        credentials.scan_repository(Repo(repo_copy))


def test_a_report_folder_with_a_leak_is_named_file_line_and_rule(tmp_path: Path) -> None:
    report = tmp_path / "reports" / "e2e-x"
    (report / "cluster" / "logs").mkdir(parents=True)
    (report / "summary.json").write_text(json.dumps({"result": "passed"}) + "\n")
    (report / "cluster" / "logs" / "webhook.log").write_text("started\n" + private_key())
    lines: list[str] = []
    failure = secret_scan.scan_report(REPO, report, lines.append)
    assert failure is not None
    assert failure.startswith(f"1 credential(s) in the report folder {report}:")
    assert "  cluster/logs/webhook.log:2: [gitleaks:private-key]" in failure
    assert "BEGIN" not in failure
    assert lines == [
        f"credential scan of {report} (gitleaks {REPO.versions['secretScan']['gitleaks']}, "
        f"{secret_scan.CONFIG}): 1 finding(s)"
    ]
    (report / "cluster" / "logs" / "webhook.log").write_text("started\n")
    assert secret_scan.scan_report(REPO, report, lines.append) is None


def test_the_tree_scan_leaves_report_folders_to_the_e2e_that_scans_them(repo_copy: Path) -> None:
    report = repo_copy / "reports" / "e2e-dev-x"
    report.mkdir(parents=True)
    (report / "kubelet.log").write_text("started\n" + private_key())
    assert credentials.scan_repository(Repo(repo_copy)) == []
    failure = secret_scan.scan_report(Repo(repo_copy), report, lambda _line: None)
    assert failure is not None and "kubelet.log:2: [gitleaks:private-key]" in failure
