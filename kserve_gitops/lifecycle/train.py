"""Deterministic training of an iris classifier from models/<model>/train.yaml.

Each recipe version becomes models/<model>/<version>/ holding exactly one model.joblib (what
KServe's sklearn runtime loads) and metadata.json (versions, sha256, held-out accuracy).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from kserve_gitops.base import machine
from kserve_gitops.repo import Repo, files

ARTIFACT = "model.joblib"
METADATA = "metadata.json"
RECIPES = "train.yaml"
# Rows whose answers every build must reproduce (the README example and the KServe docs').
PROBES: list[tuple[list[list[float]], list[int]]] = [
    ([[5.1, 3.5, 1.4, 0.2]], [0]),
    ([[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]], [1, 1]),
]


class RecipeError(ValueError):
    """A train.yaml entry is missing a field or has the wrong type."""


class RuntimeMismatch(RecipeError):
    """The scikit-learn at hand is not the one the in-cluster runtime runs."""


def runtime_pin(repo: Repo) -> dict[str, str]:
    """The runtime the artifacts are for: kserve-sklearnserver at the pinned KServe version and
    the scikit-learn inside it, both from versions.yaml (the platform's pins)."""
    try:
        kserve = repo.versions["kserve"]
        version, pin = str(kserve["version"]), str(kserve["sklearnServer"]["scikitLearn"])
    except (KeyError, TypeError) as exc:
        raise RecipeError(
            f"{repo.rel(repo.versions_file)}: kserve.version and kserve.sklearnServer.scikitLearn: "
            f"cannot read them ({exc!r})"
        ) from exc
    return {
        "image": f"kserve/sklearnserver:{version}",
        "scikit_learn": pin,
        "source": f"https://github.com/kserve/kserve/blob/{version}/python/sklearnserver/uv.lock",
    }


def check_runtime_match(runtime: dict[str, str]) -> None:
    """Refuse to pickle with another scikit-learn than the runtime's: it does not support
    unpickling across versions (estimators may load and then fail, or not load at all)."""
    import sklearn

    if sklearn.__version__ != runtime["scikit_learn"]:
        raise RuntimeMismatch(
            f"scikit-learn {sklearn.__version__} is installed, but {runtime['image']} runs "
            f"{runtime['scikit_learn']} (versions.yaml kserve.sklearnServer.scikitLearn): "
            "install the pinned one (`make venv`) before training"
        )


def model_dir(repo: Repo, model: str) -> Path:
    return repo.models / model


def load_recipes(repo: Repo, model: str) -> dict[str, Any]:
    """Read and check the model's train.yaml; errors name the file, the field and what was
    expected."""
    path = model_dir(repo, model) / RECIPES
    where = repo.rel(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(f"{where}: cannot read recipes: {exc}") from exc
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("versions"), dict)
        or not doc["versions"]
    ):
        raise RecipeError(f"{where}: versions: expected a mapping of version name to recipe")
    for version, recipe in doc["versions"].items():
        _check_recipe(where, str(version), recipe)
    return doc


def _check_recipe(where: str, version: str, recipe: Any) -> None:
    field = f"{where}: versions.{version}"
    if not isinstance(recipe, dict):
        raise RecipeError(f"{field}: expected a mapping with estimator, params, seed, test_size")
    checks = {
        "estimator": (
            lambda v: isinstance(v, str) and v.startswith("sklearn."),
            "a dotted scikit-learn class path such as sklearn.naive_bayes.GaussianNB",
        ),
        "params": (lambda v: isinstance(v, dict), "a mapping of hyperparameters"),
        "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
        "test_size": (lambda v: isinstance(v, float) and 0 < v < 1, "a fraction between 0 and 1"),
        "min_accuracy": (lambda v: isinstance(v, float) and 0 <= v <= 1, "a number in [0, 1]"),
    }
    for key, (ok, expected) in checks.items():
        if key not in recipe:
            raise RecipeError(f"{field}.{key}: missing; expected {expected}")
        if not ok(recipe[key]):
            raise RecipeError(f"{field}.{key}: expected {expected}, got {recipe[key]!r}")


def _estimator(recipe: dict[str, Any]) -> Any:
    module_name, _, class_name = recipe["estimator"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    params = dict(recipe["params"])
    # Seed every estimator that has randomness, so a rebuild is byte-identical.
    if "random_state" in cls().get_params() and "random_state" not in params:
        params["random_state"] = recipe["seed"]
    return cls(**params)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def library_versions() -> dict[str, str | None]:
    found = machine.package_versions(["scikit-learn", "joblib", "numpy"])
    return {
        "python": platform.python_version(),
        **{k.replace("-", "_"): v for k, v in found.items()},
    }


def train_version(
    repo: Repo,
    model: str,
    version: str,
    recipe: dict[str, Any],
    out_dir: Path,
    runtime: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Fit on a stratified split, check accuracy and probes, write artifact and metadata."""
    runtime = runtime or runtime_pin(repo)
    check_runtime_match(runtime)
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    iris = load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        iris.data,
        iris.target,
        test_size=recipe["test_size"],
        stratify=iris.target,
        random_state=recipe["seed"],
    )
    try:
        estimator = _estimator(recipe).fit(x_train, y_train)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise RecipeError(f"{model} {version}: cannot build {recipe['estimator']}: {exc}") from exc
    accuracy = float(estimator.score(x_test, y_test))
    if accuracy < recipe["min_accuracy"]:
        raise RecipeError(
            f"{model} {version}: held-out accuracy {accuracy:.4f} is below "
            f"min_accuracy {recipe['min_accuracy']}; artifact not written"
        )
    for rows, expected in PROBES:
        got = estimator.predict(rows).tolist()
        if got != expected:
            raise RecipeError(f"{model} {version}: predicts {got} for {rows}, want {expected}")

    out_dir.mkdir(parents=True, exist_ok=True)
    artifact = out_dir / ARTIFACT
    # files.replacing's temp name ends in .tmp, never .joblib: the runtime refuses two models.
    with files.replacing(artifact) as tmp:
        joblib.dump(estimator, tmp)
    metadata = {
        "name": model,
        "version": version,
        "artifact": ARTIFACT,
        "sha256": sha256_file(artifact),
        "size_bytes": artifact.stat().st_size,
        "estimator": recipe["estimator"],
        "params": estimator.get_params(),
        "seed": recipe["seed"],
        "test_size": recipe["test_size"],
        "train_rows": len(y_train),
        "test_rows": len(y_test),
        "accuracy": round(accuracy, 6),
        "n_features": int(estimator.n_features_in_),
        "feature_names": list(iris.feature_names),
        "classes": estimator.classes_.tolist(),
        "target_names": list(iris.target_names),
        "versions": library_versions(),
        "runtime": runtime,
        "recipe": recipe,
    }
    text = json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n"
    files.write_text(out_dir / METADATA, text)
    return metadata


def stale_reason(
    repo: Repo, version_dir: Path, recipe: dict[str, Any], runtime: dict[str, str] | None = None
) -> str | None:
    """Why the artifact in version_dir must be rebuilt, or None when it matches its metadata
    and was pickled by the runtime's scikit-learn."""
    artifact, meta_path = version_dir / ARTIFACT, version_dir / METADATA
    if not artifact.is_file():
        return f"{repo.rel(artifact)} is missing"
    if not meta_path.is_file():
        return f"{repo.rel(meta_path)} is missing"
    try:
        metadata = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        return f"{repo.rel(meta_path)} is not valid JSON: {exc}"
    if metadata.get("sha256") != sha256_file(artifact):
        return f"{repo.rel(artifact)} does not match the sha256 in {repo.rel(meta_path)}"
    if metadata.get("recipe") != recipe:
        return f"the {version_dir.name} recipe in {RECIPES} changed since the last build"
    built_with = (metadata.get("versions") or {}).get("scikit_learn")
    runtime = runtime or runtime_pin(repo)
    if built_with != runtime["scikit_learn"] or metadata.get("runtime") != runtime:
        return (
            f"{repo.rel(artifact)} was pickled by scikit-learn {built_with} for "
            f"{(metadata.get('runtime') or {}).get('image')}; {runtime['image']} runs "
            f"scikit-learn {runtime['scikit_learn']}"
        )
    others = [p.name for p in version_dir.iterdir() if p.suffix in (".joblib", ".pkl", ".pickle")]
    if others != [ARTIFACT]:
        return f"{repo.rel(version_dir)} must hold exactly one model file, found {sorted(others)}"
    return None


def ensure_trained(repo: Repo, model: str, version: str = "v1") -> Path:
    """Train `version` only if its artifact is missing or does not match its metadata."""
    doc = load_recipes(repo, model)
    if version not in doc["versions"]:
        raise RecipeError(f"{RECIPES}: versions.{version}: no such version")
    version_dir = model_dir(repo, model) / version
    reason = stale_reason(repo, version_dir, doc["versions"][version])
    if reason:
        print(f"training {model} {version}: {reason}", file=sys.stderr)
        train_version(repo, model, version, doc["versions"][version], version_dir)
    return version_dir


# Runs under another interpreter (e.g. a venv with the runtime's scikit-learn); stdlib + joblib.
_VERIFY_SCRIPT = """
import json, sys, warnings
import joblib, sklearn
warnings.simplefilter("ignore")
model = joblib.load(sys.argv[1])
out = {"scikit_learn": sklearn.__version__, "results": []}
for rows in json.loads(sys.argv[2]):
    entry = {"predict": model.predict(rows).tolist()}
    try:
        entry["predict_proba"] = model.predict_proba(rows).tolist()
    except Exception as exc:
        entry["predict_proba_error"] = f"{type(exc).__name__}: {exc}"
    out["results"].append(entry)
print(json.dumps(out))
"""


def verify_with(python: str, version_dir: Path) -> list[str]:
    """Load the artifact under another Python (the runtime's scikit-learn); return problems."""
    rows = [probe for probe, _ in PROBES]
    proc = subprocess.run(
        [python, "-c", _VERIFY_SCRIPT, str(version_dir / ARTIFACT), json.dumps(rows)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return [f"{python} could not load the artifact: {proc.stderr.strip()[-500:]}"]
    report = json.loads(proc.stdout)
    problems = []
    for (probe, expected), result in zip(PROBES, report["results"], strict=True):
        if result["predict"] != expected:
            problems.append(f"predict {probe} gave {result['predict']}, want {expected}")
        if "predict_proba_error" in result:
            problems.append(f"predict_proba {probe} failed: {result['predict_proba_error']}")
    print(
        f"{python}: scikit-learn {report['scikit_learn']}: "
        + ("ok" if not problems else f"{len(problems)} problem(s)")
    )
    return problems


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kgops train",
        description="Train a model's versions from its train.yaml.",
    )
    parser.add_argument("--model", help="(default: the checkout's only model)")
    parser.add_argument("--version", action="append", help="train only this version (repeatable)")
    parser.add_argument(
        "--if-needed", action="store_true", help="skip versions whose artifact matches metadata"
    )
    parser.add_argument(
        "--verify-with",
        metavar="PYTHON",
        help="after training, load each artifact with this interpreter (e.g. a venv holding the "
        "runtime's scikit-learn) and check predict/predict_proba",
    )
    args = parser.parse_args(argv)
    repo = repo or Repo.discover()
    model = args.model or repo.default_model()
    try:
        doc = load_recipes(repo, model)
        versions = args.version or list(doc["versions"])
        problems: list[str] = []
        for version in versions:
            if version not in doc["versions"]:
                raise RecipeError(f"{RECIPES}: versions.{version}: no such version")
            version_dir = model_dir(repo, model) / version
            reason = stale_reason(repo, version_dir, doc["versions"][version])
            if args.if_needed and reason is None:
                print(f"{model} {version}: up to date ({repo.rel(version_dir)})")
            else:
                meta = train_version(repo, model, version, doc["versions"][version], version_dir)
                print(
                    f"{model} {version}: accuracy {meta['accuracy']:.4f} on "
                    f"{meta['test_rows']} held-out rows, sha256 {meta['sha256'][:12]}, "
                    f"{repo.rel(version_dir / ARTIFACT)}"
                )
            if args.verify_with:
                problems += [f"{version}: {p}" for p in verify_with(args.verify_with, version_dir)]
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
