"""Quality gate: the committed v2 passes against every environment's stable v1; a weaker
candidate trained by the same code, a golden-set regression and a tampered artifact fail with
their reason; requests naming nothing known exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from kserve_gitops.lifecycle import gate
from tests import REPO

MODEL_DIR = Path("models") / "sklearn-iris"
# A real, weaker candidate: a depth-1 tree answers the reference rows (train.PROBES) right but
# never predicts virginica, so it scores 0.667 on the held-out rows.
WEAK_RECIPE = """
  v3:
    estimator: sklearn.tree.DecisionTreeClassifier
    params:
      max_depth: 1
    seed: 42
    test_size: 0.2
    min_accuracy: 0.5
"""


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_v2_passes_against_the_stable_v1(env: str) -> None:
    result = gate.evaluate(REPO, "sklearn-iris", "v2", env)
    assert result.passed, result.report()
    assert result.baseline == "v1"
    assert [name for name, _, _ in result.checks] == ["artifact", "accuracy", "golden set"]
    assert "14/14 rows" in result.report()


def test_make_gate_command_passes(kgops) -> None:
    proc = kgops("gate", "--model", "sklearn-iris", "--version", "v2", "--env", "prod")
    assert proc.returncode == 0, proc.stderr
    assert "PASS  accuracy: 1.0000" in proc.stdout and proc.stdout.strip().endswith("PASS")


@pytest.mark.slow
def test_weaker_candidate_fails_accuracy_and_golden_set(repo_copy: Path, kgops) -> None:
    recipes = repo_copy / MODEL_DIR / "train.yaml"
    recipes.write_text(recipes.read_text() + WEAK_RECIPE)
    trained = kgops("train", "--version", "v3", root=repo_copy)
    assert trained.returncode == 0, trained.stderr
    assert kgops("registry", "--sync", root=repo_copy).returncode == 0
    proc = kgops("gate", "--version", "v3", "--env", "prod", root=repo_copy)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL  accuracy: 0.6667 on 30 held-out rows, needs >= 0.9467" in proc.stdout
    assert "FAIL  golden set: 10/14 rows" in proc.stdout  # the four virginica rows
    assert "line 12 [6.3, 3.3, 6.0, 2.5] -> 1, want 2" in proc.stdout
    assert proc.stdout.splitlines()[-1].startswith("FAIL: accuracy: ")


def test_golden_set_regression_fails(repo_copy: Path, kgops) -> None:
    golden = repo_copy / MODEL_DIR / "golden.csv"
    lines = golden.read_text().splitlines(keepends=True)
    lines[5] = lines[5].replace(",1\n", ",2\n")  # 6.8,2.8,4.8,1.4 is versicolor: expect virginica
    golden.write_text("".join(lines))
    proc = kgops("gate", "--version", "v2", "--env", "staging", root=repo_copy)
    assert proc.returncode == 1
    assert "FAIL  golden set: 13/14 rows" in proc.stdout
    assert "line 6 [6.8, 2.8, 4.8, 1.4] -> 1, want 2" in proc.stdout
    assert "PASS  accuracy" in proc.stdout


def test_tolerance_is_read_from_the_registry(repo_copy: Path, kgops) -> None:
    """v1 against a stable v2 (accuracy 1.0): passes with tolerance 0.05, fails with 0.02."""
    reg = repo_copy / MODEL_DIR / "registry.yaml"
    text = reg.read_text()
    reg.write_text(text.replace("  prod:\n    stable: v1", "  prod:\n    stable: v2"))
    proc = kgops("gate", "--version", "v1", "--env", "prod", root=repo_copy)
    assert proc.returncode == 1
    assert "needs >= 0.9800 (v2 1.0000 - tolerance 0.02)" in proc.stdout
    reg.write_text(reg.read_text().replace("accuracy_tolerance: 0.02", "accuracy_tolerance: 0.05"))
    assert kgops("gate", "--version", "v1", "--env", "prod", root=repo_copy).returncode == 0


def test_tampered_artifact_fails_without_loading_it(repo_copy: Path, kgops) -> None:
    artifact = repo_copy / MODEL_DIR / "v2" / "model.joblib"
    artifact.write_bytes(b"not a pickle")
    proc = kgops("gate", "--version", "v2", "--env", "prod", root=repo_copy)
    assert proc.returncode == 1
    assert "FAIL  artifact: sha256 " in proc.stdout and "registered 03082e5324c7" in proc.stdout
    assert "golden set" not in proc.stdout  # never unpickled


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--version", "v9", "--env", "prod"], "versions.v9: no such version of sklearn-iris"),
        (["--version", "v2", "--env", "qa"], "environments/qa/environment.yaml: no such env"),
        (
            ["--model", "foo", "--version", "v2", "--env", "prod"],
            "models/foo/registry.yaml: no registry for model 'foo'",
        ),
    ],
)
def test_bad_requests_exit_2(kgops, args: list[str], message: str) -> None:
    proc = kgops("gate", *args)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_malformed_golden_set_names_the_line(repo_copy: Path, kgops) -> None:
    golden = repo_copy / MODEL_DIR / "golden.csv"
    golden.write_text(golden.read_text() + "5.0,3.0,x,0.2,0\n")
    proc = kgops("gate", "--version", "v2", "--env", "prod", root=repo_copy)
    assert proc.returncode == 2
    assert "models/sklearn-iris/golden.csv:16: expected 4 numbers and an integer label" in (
        proc.stderr
    )
