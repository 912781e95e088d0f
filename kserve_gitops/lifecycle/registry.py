"""The model registry models/<model>/registry.yaml: versions (artifact, sha256, metrics), the
quality gate's settings and, per environment, the stable version (the last one fully rolled
out, where `make rollback` returns).

What an environment serves right now is never copied here: it is the environment's values file
(model.storageUri, predictor.canaryTrafficPercent), read by `state()`. `check()` proves the two
agree and that every version matches its metadata.json and artifact.

    kgops registry [--model M]          versions and what each env serves
    kgops registry --check              exit 1 on any disagreement
    kgops registry --sync               refresh `versions` from metadata.json
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from kserve_gitops.lifecycle import train
from kserve_gitops.repo import Repo, render, yaml_rt

REGISTRY = "registry.yaml"


class RegistryError(ValueError):
    """A registry, values file or request that does not fit; the message names file and field."""


@dataclass(frozen=True)
class Version:
    name: str
    artifact: Path
    sha256: str
    accuracy: float
    test_rows: int
    estimator: str


@dataclass(frozen=True)
class EnvState:
    """One environment's serving state, from its values file and the registry's stable version."""

    env: str
    values_path: Path
    stable: str
    latest: str  # the version model.storageUri points at (the latest revision's model)
    canary_percent: int | None  # predictor.canaryTrafficPercent; None: no traffic split
    mode: str

    @property
    def canary(self) -> str | None:
        """The version under canary, or None when the latest revision is the stable one."""
        return self.latest if self.latest != self.stable else None

    @property
    def phase(self) -> str:
        if self.canary and self.canary_percent is None:
            return "inconsistent"  # serving a version that is not recorded as stable
        if self.canary:
            return "canary"
        return "stable" if self.canary_percent is None else "rollback-finishing"

    def describe(self) -> str:
        if self.phase == "canary":
            return (
                f"{self.stable} {100 - (self.canary_percent or 0)}% + canary {self.canary} "
                f"{self.canary_percent}%"
            )
        if self.phase == "rollback-finishing":
            return f"{self.stable} 100% (rebuilt {self.stable} revision at 0%, rollback finishing)"
        if self.phase == "inconsistent":
            return f"{self.latest} 100% but the registry's stable version is {self.stable}"
        return f"{self.stable} 100%"


@dataclass
class Registry:
    repo: Repo
    model: str
    path: Path
    text: str
    doc: Any  # the round-trip document, for edits that keep comments

    @property
    def model_dir(self) -> Path:
        return self.path.parent

    @property
    def storage(self) -> str:
        return str(self.doc["storage"]).rstrip("/")

    @property
    def tolerance(self) -> float:
        return float(self.doc["gate"]["accuracy_tolerance"])

    @property
    def golden(self) -> Path:
        return self.model_dir / str(self.doc["gate"]["golden"])

    def versions(self) -> dict[str, Version]:
        return {
            str(name): Version(
                name=str(name),
                artifact=self.model_dir / str(v["artifact"]),
                sha256=str(v["sha256"]),
                accuracy=float(v["accuracy"]),
                test_rows=int(v["test_rows"]),
                estimator=str(v["estimator"]),
            )
            for name, v in self.doc["versions"].items()
        }

    def version(self, name: str) -> Version:
        versions = self.versions()
        if name not in versions:
            known = ", ".join(versions) or "none"
            raise RegistryError(
                f"{self.repo.rel(self.path)}: versions.{name}: no such version of {self.model} "
                f"(registered: {known})"
            )
        return versions[name]

    def storage_uri(self, version: str) -> str:
        return f"{self.storage}/{version}"

    def version_of(self, storage_uri: str, where: str) -> str:
        prefix = self.storage + "/"
        name = storage_uri[len(prefix) :] if storage_uri.startswith(prefix) else ""
        if name not in self.versions():
            raise RegistryError(
                f"{where}: model.storageUri {storage_uri!r} is not a registered version "
                f"(expected {prefix}<version> with a version in {self.repo.rel(self.path)})"
            )
        return name

    def stable(self, env: str) -> str:
        envs = self.doc.get("environments") or {}
        if env not in envs:
            raise RegistryError(f"{self.repo.rel(self.path)}: environments.{env}: missing")
        name = str(envs[env]["stable"])
        self.version(name)
        return name


_FIELDS = {
    "model": str,
    "storage": str,
    "gate": dict,
    "versions": dict,
    "environments": dict,
}


def load(repo: Repo, model: str) -> Registry:
    path = repo.models / model / REGISTRY
    if not path.is_file():
        raise RegistryError(
            f"{repo.rel(path)}: no registry for model {model!r} "
            f"(known: {', '.join(repo.model_names)})"
        )
    try:
        text, doc = yaml_rt.load(repo, path)
    except yaml_rt.YamlEditError as exc:
        raise RegistryError(str(exc)) from None
    where = repo.rel(path)
    if not isinstance(doc, dict):
        raise RegistryError(f"{where}: expected a mapping")
    for key, kind in _FIELDS.items():
        if not isinstance(doc.get(key), kind):
            raise RegistryError(f"{where}: {key}: expected a {kind.__name__}")
    if doc["model"] != model:
        raise RegistryError(f"{where}: model: {doc['model']!r}, expected {model!r}")
    for name, v in doc["versions"].items():
        missing = {"artifact", "sha256", "accuracy", "test_rows", "estimator"} - set(v or {})
        if missing:
            raise RegistryError(f"{where}: versions.{name}: missing {', '.join(sorted(missing))}")
    for key in ("accuracy_tolerance", "golden"):
        if key not in doc["gate"]:
            raise RegistryError(f"{where}: gate.{key}: missing")
    return Registry(repo=repo, model=model, path=path, text=text, doc=doc)


def state(reg: Registry, env: str) -> EnvState:
    """The environment's state; RegistryError if its values file does not map to the registry."""
    repo = reg.repo
    try:
        values_path = render.model_values_file(repo, env, reg.model)
    except render.RenderError as exc:
        raise RegistryError(str(exc)) from None
    where = repo.rel(values_path)
    if not values_path.is_file():
        raise RegistryError(
            f"{where}: no values file: model {reg.model!r} is not deployed in {env}"
        )
    try:
        values = render.model_values(repo, values_path)
    except render.RenderError as exc:
        raise RegistryError(str(exc)) from None
    storage_uri = (values.get("model") or {}).get("storageUri")
    if not isinstance(storage_uri, str):
        raise RegistryError(f"{where}: model.storageUri: missing")
    percent = (values.get("predictor") or {}).get("canaryTrafficPercent")
    return EnvState(
        env=env,
        values_path=values_path,
        stable=reg.stable(env),
        latest=reg.version_of(storage_uri, where),
        canary_percent=percent,
        mode=str(values.get("deploymentMode", "knative")),
    )


def _metadata(reg: Registry, name: str) -> dict[str, Any]:
    meta_path = reg.model_dir / name / train.METADATA
    try:
        return json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{reg.repo.rel(meta_path)}: cannot read metadata: {exc}") from None


def check(reg: Registry) -> list[str]:
    """Every disagreement between registry, metadata, artifacts and environment values files."""
    repo = reg.repo
    problems: list[str] = []
    where = repo.rel(reg.path)
    recipes = set(train.load_recipes(repo, reg.model)["versions"])
    registered = set(reg.versions())
    for name in sorted(recipes - registered):
        problems.append(f"{where}: versions.{name}: in {train.RECIPES} but not registered (--sync)")
    for name in sorted(registered - recipes):
        problems.append(f"{where}: versions.{name}: registered but not in {train.RECIPES}")
    for name, version in reg.versions().items():
        try:
            meta = _metadata(reg, name)
        except RegistryError as exc:
            problems.append(str(exc))
            continue
        if not version.artifact.is_file():
            problems.append(
                f"{where}: versions.{name}.artifact: {repo.rel(version.artifact)} missing"
            )
        elif train.sha256_file(version.artifact) != version.sha256:
            problems.append(f"{where}: versions.{name}.sha256 does not match the artifact")
        for key in ("sha256", "accuracy", "test_rows", "estimator"):
            if meta.get(key) != getattr(version, key):
                problems.append(
                    f"{where}: versions.{name}.{key} is {getattr(version, key)!r}, "
                    f"metadata.json says {meta.get(key)!r} (--sync)"
                )
    if not reg.golden.is_file():
        problems.append(f"{where}: gate.golden: {repo.rel(reg.golden)} missing")
    envs = set(repo.environment_names)
    for env in sorted(set(reg.doc["environments"]) - envs):
        problems.append(f"{where}: environments.{env}: no such environment")
    for env in sorted(envs):
        if not render.model_values_file(repo, env, reg.model).is_file():
            continue
        try:
            st = state(reg, env)
        except RegistryError as exc:
            problems.append(str(exc))
            continue
        if st.phase == "inconsistent":
            problems.append(
                f"{repo.rel(st.values_path)}: model.storageUri serves {st.latest} with no "
                f"predictor.canaryTrafficPercent, but {where} environments.{env}.stable is "
                f"{st.stable}: promote through `make promote` so both agree"
            )
    return problems


def sync(reg: Registry) -> str:
    """The registry text with `versions` refreshed from every trained version's metadata.json."""
    versions = reg.doc["versions"]
    for name in train.load_recipes(reg.repo, reg.model)["versions"]:
        meta = _metadata(reg, name)
        entry = versions.setdefault(name, {})
        entry["artifact"] = f"{name}/{train.ARTIFACT}"
        for key in ("sha256", "estimator", "accuracy", "test_rows"):
            entry[key] = meta[key]
    return yaml_rt.dumps(reg.doc, reg.text)


def table(reg: Registry) -> str:
    repo = reg.repo
    versions = [
        (v.name, f"{v.accuracy:.4f}", v.sha256[:12], v.estimator) for v in reg.versions().values()
    ]
    envs = [
        (env, (st := state(reg, env)).stable, st.describe())
        for env in repo.environment_names  # in promotion order
        if render.model_values_file(repo, env, reg.model).is_file()
    ]
    # No numparse: a sha256 prefix of digits only would be printed as a number.
    tables = [
        tabulate(
            versions,
            ("version", "accuracy", "sha256", "estimator"),
            disable_numparse=True,
            colalign=("left", "right", "left", "left"),
            tablefmt="plain",
        ),
        tabulate(envs, ("env", "stable", "serving"), tablefmt="plain", disable_numparse=True),
    ]
    return f"{reg.model}: {repo.rel(reg.path)}\n\n" + "\n\n".join(
        textwrap.indent(t, "  ") for t in tables
    )


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kgops registry", description=__doc__)
    parser.add_argument("--model", help="(default: the checkout's only model)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="exit 1 on any disagreement")
    action.add_argument("--sync", action="store_true", help="refresh versions from metadata.json")
    args = parser.parse_args(argv)
    repo = repo or Repo.discover()
    try:
        reg = load(repo, args.model or repo.default_model())
        if args.sync:
            text = sync(reg)
            if text != reg.text:
                yaml_rt.write_all({reg.path: text})
                sys.stdout.write(yaml_rt.diff(repo, reg.path, reg.text, text))
            else:
                print(f"{repo.rel(reg.path)}: up to date")
            return 0
        if args.check:
            problems = check(reg)
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
            if not problems:
                print(f"{repo.rel(reg.path)}: consistent with metadata, artifacts and environments")
            return 1 if problems else 0
        print(table(reg))
    except (RegistryError, train.RecipeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
