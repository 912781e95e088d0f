"""The committed sklearn-iris artifact: answers, accuracy, metadata, reproducible training."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import joblib
import joblib.numpy_pickle
import pytest
import sklearn
import yaml

from kserve_gitops.lifecycle import train
from kserve_gitops.repo import Repo
from kserve_gitops.serving.sklearn_model import SKLearnModel, find_model_file
from tests import REPO

MODEL = "sklearn-iris"
V1 = REPO.models / MODEL / "v1"


@pytest.fixture(scope="module")
def metadata() -> dict:
    return json.loads((V1 / train.METADATA).read_text())


@pytest.fixture(scope="module")
def model():
    return joblib.load(V1 / train.ARTIFACT)


def test_artifact_answers_the_reference_rows(model):
    assert model.predict([[5.1, 3.5, 1.4, 0.2]]).tolist() == [0]
    assert model.predict([[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]).tolist() == [1, 1]


def test_probabilities_are_a_distribution_matching_the_label(model):
    proba = model.predict_proba([[5.1, 3.5, 1.4, 0.2], [6.8, 2.8, 4.8, 1.4]])
    assert proba.shape == (2, 3)
    assert proba.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert proba.argmax(axis=1).tolist() == [0, 1]


def test_metadata_matches_the_artifact_and_recipe(metadata):
    assert metadata["sha256"] == train.sha256_file(V1 / train.ARTIFACT)
    assert metadata["size_bytes"] == (V1 / train.ARTIFACT).stat().st_size
    assert metadata["accuracy"] >= 0.9
    assert metadata["train_rows"] + metadata["test_rows"] == 150
    assert metadata["recipe"] == train.load_recipes(REPO, MODEL)["versions"]["v1"]
    for key in ("python", "scikit_learn", "joblib", "numpy"):
        assert metadata["versions"][key]
    assert metadata["runtime"] == train.runtime_pin(REPO)
    assert train.stale_reason(REPO, V1, metadata["recipe"]) is None


def _pinned_requirement(text: str, name: str) -> str:
    found = re.findall(rf"^\s*\"?{re.escape(name)}==([^\s\",]+)", text, re.M)
    assert len(found) == 1, f"{name} pinned {len(found)} times"
    return found[0]


def test_training_serving_and_the_runtime_pin_agree():
    """One scikit-learn everywhere: the runtime's (versions.yaml), the one pyproject.toml and
    constraints.txt install for training and local serving, and the one every artifact was
    pickled by. Any disagreement is a model that may not load in the cluster."""
    pin = train.runtime_pin(REPO)["scikit_learn"]
    declared = {
        "versions.yaml kserve.sklearnServer.scikitLearn": pin,
        "pyproject.toml": _pinned_requirement(
            (REPO.root / "pyproject.toml").read_text(), "scikit-learn"
        ),
        "constraints.txt": _pinned_requirement(
            (REPO.root / "constraints.txt").read_text(), "scikit-learn"
        ),
        "installed (training and kserve_gitops.serving.server)": sklearn.__version__,
    }
    for version_dir in sorted(p.parent for p in (V1.parent).glob(f"v*/{train.METADATA}")):
        meta = json.loads((version_dir / train.METADATA).read_text())
        declared[f"{version_dir.name}/{train.METADATA} versions"] = meta["versions"]["scikit_learn"]
        declared[f"{version_dir.name}/{train.METADATA} runtime"] = meta["runtime"]["scikit_learn"]
    assert len(declared) >= 8  # v1 and v2 at least
    assert set(declared.values()) == {pin}, declared


def test_training_refuses_another_scikit_learn(tmp_path: Path, monkeypatch):
    doc = train.load_recipes(REPO, MODEL)
    monkeypatch.setattr(sklearn, "__version__", "1.9.1")
    with pytest.raises(
        train.RuntimeMismatch, match=r"scikit-learn 1\.9\.1 is installed.*runs 1\.5\.2"
    ):
        train.train_version(REPO, MODEL, "v1", doc["versions"]["v1"], tmp_path)
    assert not (tmp_path / train.ARTIFACT).exists()


def test_an_artifact_pickled_by_another_scikit_learn_is_stale(tmp_path: Path):
    shutil.copytree(V1, tmp_path / "v1")
    meta_path = tmp_path / "v1" / train.METADATA
    meta = json.loads(meta_path.read_text())
    meta["versions"]["scikit_learn"] = "1.9.1"
    meta_path.write_text(json.dumps(meta))
    reason = train.stale_reason(REPO, tmp_path / "v1", meta["recipe"])
    assert (
        reason
        and "pickled by scikit-learn 1.9.1" in reason
        and "runs scikit-learn 1.5.2" in (reason)
    )


def test_the_local_server_refuses_an_artifact_of_another_scikit_learn(tmp_path: Path):
    shutil.copytree(V1, tmp_path / "v1")
    meta_path = tmp_path / "v1" / train.METADATA
    meta = json.loads(meta_path.read_text())
    meta["versions"]["scikit_learn"] = "1.9.1"
    meta_path.write_text(json.dumps(meta))
    model = SKLearnModel("sklearn-iris", tmp_path / "v1")
    with pytest.raises(RuntimeError, match=r"pickled by scikit-learn 1\.9\.1.*runs 1\.5\.2"):
        model.load()
    assert SKLearnModel("sklearn-iris", V1).load()


def test_the_runtime_loads_only_model_joblib_from_the_version_dir():
    # KServe's sklearn server refuses a directory with more than one .joblib/.pkl/.pickle.
    assert find_model_file(V1) == V1 / train.ARTIFACT


def test_artifact_references_only_scientific_stack_globals(monkeypatch):
    # What a restricted unpickler (KServe's safe loading) lets through: no arbitrary callables.
    seen: set[tuple[str, str]] = set()

    class Recording(joblib.numpy_pickle.NumpyUnpickler):
        def find_class(self, module: str, name: str):
            seen.add((module, name))
            return super().find_class(module, name)

    monkeypatch.setattr(joblib.numpy_pickle, "NumpyUnpickler", Recording)
    joblib.load(V1 / train.ARTIFACT)
    assert ("sklearn.naive_bayes", "GaussianNB") in seen
    assert {module.split(".")[0] for module, _ in seen} <= {"sklearn", "numpy", "joblib"}


def test_retraining_reproduces_the_artifact(tmp_path: Path, metadata):
    doc = train.load_recipes(REPO, MODEL)
    rebuilt = train.train_version(REPO, MODEL, "v1", doc["versions"]["v1"], tmp_path)
    model = joblib.load(tmp_path / train.ARTIFACT)
    for rows, expected in train.PROBES:
        assert model.predict(rows).tolist() == expected
    assert rebuilt["accuracy"] == metadata["accuracy"]
    if rebuilt["versions"] == metadata["versions"]:
        # Same library versions: byte-identical, so `make train` leaves git clean.
        assert rebuilt["sha256"] == metadata["sha256"]
        assert (tmp_path / train.METADATA).read_text() == (V1 / train.METADATA).read_text()


@pytest.fixture
def model_root(tmp_path: Path) -> Repo:
    """A checkout holding only versions.yaml and the recipe file, so training starts from
    nothing."""
    (tmp_path / "models" / MODEL).mkdir(parents=True)
    shutil.copy(V1.parent / train.RECIPES, tmp_path / "models" / MODEL / train.RECIPES)
    shutil.copy(REPO.versions_file, tmp_path / "versions.yaml")
    return Repo(tmp_path)


def test_ensure_trained_trains_only_when_needed(model_root: Repo):
    version_dir = train.ensure_trained(model_root, MODEL, "v1")
    artifact = version_dir / train.ARTIFACT
    first = artifact.stat().st_mtime_ns
    assert train.ensure_trained(model_root, MODEL, "v1") == version_dir
    assert artifact.stat().st_mtime_ns == first  # up to date: not rebuilt

    artifact.write_bytes(artifact.read_bytes() + b"tampered")
    assert "does not match the sha256" in train.stale_reason(
        model_root,
        version_dir,
        train.load_recipes(model_root, MODEL)["versions"]["v1"],
    )
    train.ensure_trained(model_root, MODEL, "v1")
    meta = json.loads((version_dir / train.METADATA).read_text())
    assert train.sha256_file(artifact) == meta["sha256"]


def test_stale_reason_flags_a_second_model_file(model_root: Repo):
    version_dir = train.ensure_trained(model_root, MODEL, "v1")
    (version_dir / "extra.pkl").write_bytes(b"x")
    recipe = train.load_recipes(model_root, MODEL)["versions"]["v1"]
    assert "exactly one model file" in train.stale_reason(model_root, version_dir, recipe)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r.pop("seed"), "versions.v1.seed: missing"),
        (lambda r: r.update(test_size=2.0), "versions.v1.test_size: expected a fraction"),
        (lambda r: r.update(estimator="os.system"), "versions.v1.estimator: expected a dotted"),
        (lambda r: r.update(min_accuracy=0.999), "below min_accuracy 0.999"),
        (lambda r: r["params"].update(var_smoothing="x"), "cannot build sklearn.naive_bayes"),
    ],
)
def test_bad_recipes_fail_with_file_and_field(model_root: Repo, edit, message: str):
    recipes = model_root.models / MODEL / train.RECIPES
    doc = train.load_recipes(model_root, MODEL)
    edit(doc["versions"]["v1"])
    recipes.write_text(yaml.safe_dump(doc))
    with pytest.raises(train.RecipeError, match=message.replace(".", r"\.")):
        train.ensure_trained(model_root, MODEL, "v1")
    assert not (model_root.models / MODEL / "v1" / train.ARTIFACT).exists()


def test_make_train_is_idempotent_in_a_repo_copy(repo_copy: Path, kgops):
    result = kgops("train", root=repo_copy)
    assert result.returncode == 0, result.stderr
    assert "accuracy 0.9667" in result.stdout
    again = kgops("train", "--if-needed", root=repo_copy)
    assert again.returncode == 0 and "up to date" in again.stdout
