"""canary / promote / rollback edit an environment's values file (and the registry on promotion)
as KServe's Knative canary semantics require, keep comments and layout, validate before writing
and print the diff; `make validate` passes after every step in every environment; every bad
request leaves every file byte-identical."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from kserve_gitops.repo import render
from tests import REPO

ENVS = ("dev", "staging", "prod")
REGISTRY = Path("models") / "sklearn-iris" / "registry.yaml"


def values_path(root: Path, env: str) -> Path:
    return root / "environments" / env / "models" / "sklearn-iris.yaml"


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file a rollout could touch."""
    files = [*(root / "environments").rglob("*"), *(root / "models").rglob("*")]
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(files)
        if p.is_file()
    }


def isvc(root: Path, env: str) -> dict:
    """The InferenceService the chart renders from the environment's values file."""
    values = yaml.safe_load(values_path(root, env).read_text())
    [obj] = render.render_chart(REPO, REPO.model_chart, values, "sklearn-iris", "models", env)
    return obj.body


def stable_of(root: Path, env: str) -> str:
    return yaml.safe_load((root / REGISTRY).read_text())["environments"][env]["stable"]


@pytest.fixture
def rollout(kgops, repo_copy: Path):
    def run(*args: str, ok: bool = True):
        proc = kgops("rollout", *args, root=repo_copy)
        assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        return proc

    return run


@pytest.mark.slow
def test_every_step_in_every_environment_validates(repo_copy: Path, rollout, kgops) -> None:
    originals = {env: values_path(repo_copy, env).read_text() for env in ENVS}

    def step(*args: str) -> None:
        for env in ENVS:
            rollout(*args, "--env", env)
        check = kgops("validate", "-q", root=repo_copy)
        assert check.returncode == 0, check.stderr
        assert kgops("registry", "--check", root=repo_copy).returncode == 0

    step("canary", "--version", "v2", "--percent", "10")
    for env in ENVS:
        body = isvc(repo_copy, env)
        assert body["metadata"]["annotations"]["serving.kserve.io/enable-tag-routing"] == "true"
        assert body["spec"]["predictor"]["canaryTrafficPercent"] == 10
        assert body["spec"]["predictor"]["model"]["storageUri"] == "pvc://sklearn-iris-models/v2"
        assert stable_of(repo_copy, env) == "v1"

    step("canary", "--version", "v2", "--percent", "50")
    assert isvc(repo_copy, "prod")["spec"]["predictor"]["canaryTrafficPercent"] == 50

    step("rollback")  # 100% back on v1 at once, v1 rebuilt at 0%
    for env in ENVS:
        predictor = isvc(repo_copy, env)["spec"]["predictor"]
        assert predictor["canaryTrafficPercent"] == 0
        assert predictor["model"]["storageUri"] == "pvc://sklearn-iris-models/v1"

    step("rollback")  # finish: the rebuilt v1 revision takes 100%
    for env in ENVS:
        assert "canaryTrafficPercent" not in isvc(repo_copy, env)["spec"]["predictor"]
        # Back where it started, plus tag routing (switching it off would cost a revision).
        assert values_path(repo_copy, env).read_text() == originals[env].replace(
            "deploymentMode: knative\n", "deploymentMode: knative\ntagRouting: true\n"
        )

    step("canary", "--version", "v2", "--percent", "0")  # dark launch: latest- URL only
    step("promote")
    for env in ENVS:
        predictor = isvc(repo_copy, env)["spec"]["predictor"]
        assert "canaryTrafficPercent" not in predictor
        assert predictor["model"]["storageUri"] == "pvc://sklearn-iris-models/v2"
        assert stable_of(repo_copy, env) == "v2"


def test_canary_diff_keeps_comments_and_layout(repo_copy: Path, rollout) -> None:
    before = values_path(repo_copy, "staging").read_text()
    proc = rollout("canary", "--env", "staging", "--version", "v2", "--percent", "10")
    after = values_path(repo_copy, "staging").read_text()
    assert proc.stdout.startswith(
        "--- a/environments/staging/models/sklearn-iris.yaml\n"
        "+++ b/environments/staging/models/sklearn-iris.yaml\n"
    )
    changed = [
        line
        for line in proc.stdout.splitlines()
        if line[:1] in "+-" and line[:3] not in ("---", "+++")
    ]
    assert sorted(changed) == sorted(
        [
            "+tagRouting: true",
            "-  storageUri: pvc://sklearn-iris-models/v1",
            "+  storageUri: pvc://sklearn-iris-models/v2",
            "+  canaryTrafficPercent: 10",
        ]
    )
    assert "staging: canary v2 at 10% beside v1" in proc.stdout
    assert (
        "HOST_STABLE=prev-sklearn-iris-predictor.models.staging.kserve.example.com "
        "HOST_CANARY=latest-sklearn-iris-predictor.models.staging.kserve.example.com"
    ) in proc.stdout
    kept = [line for line in before.splitlines() if "storageUri" not in line]
    assert [line for line in after.splitlines() if line in kept] == kept  # order and comments
    assert after.startswith("---\n")


def test_promote_writes_values_and_registry(repo_copy: Path, rollout, kgops) -> None:
    rollout("canary", "--env", "prod", "--version", "v2", "--percent", "5")
    proc = rollout("promote", "--env", "prod")
    assert "--- a/models/sklearn-iris/registry.yaml" in proc.stdout
    assert "-    stable: v1\n+    stable: v2" in proc.stdout
    assert stable_of(repo_copy, "prod") == "v2"
    assert stable_of(repo_copy, "staging") == "v1"
    registry = kgops("registry", root=repo_copy).stdout
    assert ["prod", "v2", "v2", "100%"] in [line.split() for line in registry.splitlines()]
    assert (repo_copy / REGISTRY).read_text().startswith("# Model registry of sklearn-iris")


def canary(env: str, version: str, percent: str) -> list[str]:
    return ["canary", "--env", env, "--version", version, "--percent", percent]


STAGING_CANARY = canary("staging", "v2", "10")
# Each bad request: (setup steps that succeed, the refused request, the reason it names).
BAD_REQUESTS = {
    "unknown version": ([], canary("staging", "v9", "10"), "versions.v9: no such version"),
    "percent above range": ([], canary("staging", "v2", "101"), "--percent 101: expected 0-99"),
    "percent 100 is promote": ([], canary("staging", "v2", "100"), "for 100% use `make promote`"),
    "negative percent": ([], canary("staging", "v2", "-5"), "--percent -5: expected 0-99"),
    "canary of the stable version": (
        [],
        canary("staging", "v1", "10"),
        "staging already serves v1 as its stable version",
    ),
    "promote with no canary": (
        [],
        ["promote", "--env", "prod"],
        "prod: no canary in progress (v1 100%): nothing to promote",
    ),
    "rollback with no canary": (
        [],
        ["rollback", "--env", "dev"],
        "dev: no canary in progress (v1 100%): nothing to roll back",
    ),
    "unknown environment": (
        [],
        canary("qa", "v2", "10"),
        "environments/qa/environment.yaml: no such environment",
    ),
    "unknown model": (
        [],
        ["promote", "--model", "foo", "--env", "prod"],
        "models/foo/registry.yaml: no registry for model 'foo'",
    ),
    "second canary while one runs": (
        [STAGING_CANARY],
        canary("staging", "v1", "20"),
        "staging already serves v1 as its stable version",
    ),
    "canary while a rollback finishes": (
        [STAGING_CANARY, ["rollback", "--env", "staging"]],
        STAGING_CANARY,
        "a rollback to v1 is finishing",
    ),
    "promote after the rollback started": (
        [STAGING_CANARY, ["rollback", "--env", "staging"]],
        ["promote", "--env", "staging"],
        "staging: no canary in progress",
    ),
    "canary of a version below the stable's accuracy": (
        [canary("dev", "v2", "10"), ["promote", "--env", "dev"]],
        canary("dev", "v1", "10"),
        "sklearn-iris v1 failed the quality gate for dev: accuracy: 0.9667 on 30 held-out rows, "
        "needs >= 0.9800",
    ),
}


@pytest.mark.parametrize(
    ("setup", "request_args", "reason"), BAD_REQUESTS.values(), ids=BAD_REQUESTS
)
def test_bad_request_changes_nothing(
    repo_copy: Path, rollout, setup: list[list[str]], request_args: list[str], reason: str
) -> None:
    for args in setup:
        rollout(*args)
    before = snapshot(repo_copy)
    proc = rollout(*request_args, ok=False)
    assert proc.returncode == 2
    assert reason in proc.stderr and proc.stderr.rstrip().endswith("nothing changed")
    assert proc.stdout == ""
    assert snapshot(repo_copy) == before


def test_promoting_a_version_that_fails_the_gate_changes_nothing(repo_copy: Path, rollout) -> None:
    rollout("canary", "--env", "staging", "--version", "v2", "--percent", "10")
    golden = repo_copy / "models" / "sklearn-iris" / "golden.csv"
    golden.write_text(golden.read_text().replace("6.8,2.8,4.8,1.4,1", "6.8,2.8,4.8,1.4,2"))
    before = snapshot(repo_copy)
    proc = rollout("promote", "--env", "staging", ok=False)
    assert (
        "sklearn-iris v2 failed the quality gate for staging: golden set: 13/14 rows" in proc.stderr
    )
    assert snapshot(repo_copy) == before


def test_a_change_the_chart_refuses_is_not_written(repo_copy: Path, rollout) -> None:
    """Validated before writing: a chart that caps canaryTrafficPercent at 5 refuses 10%."""
    schema = repo_copy / "charts" / "inference-service" / "values.schema.json"
    text = schema.read_text()
    marker = (
        '"description": "Percent of traffic sent to the latest revision (knative); '
        'null: no canary.",'
    )
    assert marker in text
    schema.write_text(text.replace(marker, marker + '\n          "exclusiveMaximum": 6,'))
    before = snapshot(repo_copy)
    proc = rollout("canary", "--env", "prod", "--version", "v2", "--percent", "10", ok=False)
    assert "the change would not render: environments/prod/models/sklearn-iris.yaml" in proc.stderr
    assert "canaryTrafficPercent" in proc.stderr
    assert snapshot(repo_copy) == before
    rollout("canary", "--env", "prod", "--version", "v2", "--percent", "5")


def test_standard_mode_environment_is_refused(repo_copy: Path, rollout) -> None:
    path = values_path(repo_copy, "dev")
    path.write_text(path.read_text().replace("deploymentMode: knative", "deploymentMode: standard"))
    before = snapshot(repo_copy)
    proc = rollout("canary", "--env", "dev", "--version", "v2", "--percent", "10", ok=False)
    assert "deploymentMode standard: rollouts are automated for knative mode" in proc.stderr
    assert snapshot(repo_copy) == before
