"""The repository: where things live, what it declares, and how it renders.

`Repo(root)` is the one handle on a checkout. Commands build it when they run
(`Repo.discover()`), never at import, so a test hands a throwaway copy to a command in the same
interpreter. What the checkout declares (environments, models, pins) is read from its files once
per Repo and never restated in Python."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml


class RepoError(Exception):
    """A declaration of the repository is missing or malformed; the message names the file."""


class Repo:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    @classmethod
    def discover(cls) -> Repo:
        """KGOPS_ROOT when set, else the checkout this package was installed from."""
        return cls(os.environ.get("KGOPS_ROOT") or Path(__file__).resolve().parents[2])

    def __repr__(self) -> str:
        return f"Repo({str(self.root)!r})"

    # Folders and files, by what they hold.
    @property
    def charts(self) -> Path:
        return self.root / "charts"

    @property
    def model_chart(self) -> Path:
        return self.charts / "inference-service"

    @property
    def environments(self) -> Path:
        return self.root / "environments"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def schemas(self) -> Path:
        """yamale schemas of this repository's own config files (not Kubernetes schemas)."""
        return self.root / "schemas"

    @property
    def versions_file(self) -> Path:
        return self.root / "versions.yaml"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def cache(self) -> Path:
        return self.root / ".cache"

    @property
    def loadtests(self) -> Path:
        return self.root / "loadtests"

    @property
    def e2e(self) -> Path:
        """Data of the e2e clusters (kind config, kwok cluster, values on top of the releases)."""
        return self.root / "e2e"

    def rel(self, path: Path | str) -> str:
        """A path as users see it in messages: relative to the checkout when inside it."""
        try:
            return str(Path(path).resolve().relative_to(self.root))
        except ValueError:
            return str(path)

    def environment_dir(self, env: str) -> Path:
        return self.environments / env

    # What the checkout declares.
    @cached_property
    def versions(self) -> dict[str, Any]:
        """versions.yaml, the platform's pins."""
        return _load_mapping(self.versions_file, self)

    @property
    def kubernetes_version(self) -> str:
        """`kubernetes.version` of versions.yaml, e.g. "1.36.4"."""
        return self.version_of("kubernetes")

    def version_of(self, component: str) -> str:
        """`<component>.version` of versions.yaml, e.g. "v3.5.1" for argocd."""
        try:
            return str(self.versions[component]["version"])
        except (KeyError, TypeError):
            raise RepoError(
                f"{self.rel(self.versions_file)}: {component}.version: expected a version string"
            ) from None

    @cached_property
    def declared_environments(self) -> tuple[str, ...]:
        """Every environments/<env>/ with an environment.yaml, sorted (no order implied)."""
        return tuple(sorted(p.parent.name for p in self.environments.glob("*/environment.yaml")))

    @cached_property
    def environment_names(self) -> tuple[str, ...]:
        """The declared environments in promotion order: the one no other promotes to first,
        then along `promotesTo`."""
        declared = {
            env: _load_mapping(self.environment_dir(env) / "environment.yaml", self)
            for env in self.declared_environments
        }
        if not declared:
            raise RepoError(f"{self.rel(self.environments)}: no */environment.yaml")
        targets = {meta.get("promotesTo") for meta in declared.values()}
        first = [env for env in declared if env not in targets]
        if len(first) != 1:
            raise RepoError(
                f"{self.rel(self.environments)}: promotesTo must chain every environment from one "
                f"start; environments no other promotes to: {', '.join(first) or 'none'}"
            )
        order = [first[0]]
        while (nxt := declared[order[-1]].get("promotesTo")) is not None:
            if nxt not in declared or nxt in order:
                where = f"environments/{order[-1]}/environment.yaml"
                raise RepoError(
                    f"{where}: promotesTo: expected one of the environments not yet in the chain "
                    f"{' -> '.join(order)}, got {nxt!r}"
                )
            order.append(nxt)
        if len(order) != len(declared):
            # The rest promote in a circle: name the file whose promotesTo closes it.
            loop = [min(set(declared) - set(order))]
            while (nxt := declared[loop[-1]].get("promotesTo")) not in loop:
                loop.append(nxt)
            raise RepoError(
                f"environments/{loop[-1]}/environment.yaml: promotesTo: {nxt} closes a cycle "
                f"({' -> '.join([*loop, nxt])}) off the chain {' -> '.join(order)}"
            )
        return tuple(order)

    @cached_property
    def model_names(self) -> tuple[str, ...]:
        """Every models/<model>/ with a registry.yaml, sorted."""
        return tuple(sorted(p.parent.name for p in self.models.glob("*/registry.yaml")))

    def default_model(self) -> str:
        """The model a command means when none is named: the only one, else an error."""
        names = self.model_names
        if len(names) != 1:
            raise RepoError(
                f"{self.rel(self.models)}: {len(names)} models ({', '.join(names) or 'none'}); "
                "name one with --model"
            )
        return names[0]


def _load_mapping(path: Path, repo: Repo) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RepoError(f"{repo.rel(path)}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise RepoError(f"{repo.rel(path)}: not YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RepoError(f"{repo.rel(path)}: expected a mapping at the top")
    return data
