"""`Repo`: the declarations of a checkout read from its files, with errors that name the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from kserve_gitops.repo import Repo, RepoError
from tests import REPO


def _environments(root: Path, chain: dict[str, str | None]) -> Repo:
    for env, target in chain.items():
        folder = root / "environments" / env
        folder.mkdir(parents=True)
        meta = {"name": env, **({"promotesTo": target} if target else {})}
        (folder / "environment.yaml").write_text(yaml.safe_dump(meta))
    return Repo(root)


def test_environments_come_in_promotion_order_not_alphabetical(tmp_path: Path) -> None:
    repo = _environments(tmp_path, {"prod": None, "dev": "qa", "qa": "prod"})
    assert repo.environment_names == ("dev", "qa", "prod")


@pytest.mark.parametrize(
    ("chain", "message"),
    [
        ({"a": "b", "b": "a"}, "environments no other promotes to: none"),
        (
            {"dev": "staging", "staging": "dev", "prod": None},
            r"environments/staging/environment\.yaml: promotesTo: dev closes a cycle "
            r"\(dev -> staging -> dev\) off the chain prod",
        ),
        ({"a": None, "b": None}, "environments no other promotes to: a, b"),
        ({"a": "c", "b": "a"}, "environments/a/environment.yaml: promotesTo"),
    ],
)
def test_a_broken_promotion_chain_names_the_file(tmp_path: Path, chain, message: str) -> None:
    with pytest.raises(RepoError, match=message):
        _ = _environments(tmp_path, chain).environment_names


def test_this_checkout_declares_its_facts_once() -> None:
    assert REPO.environment_names == ("dev", "staging", "prod")
    assert REPO.model_names == ("sklearn-iris",) and REPO.default_model() == "sklearn-iris"


def test_the_kubernetes_version_is_the_pin_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "versions.yaml").write_text('kubernetes:\n  version: "9.8.7"\n')
    monkeypatch.setenv("KGOPS_ROOT", str(tmp_path))  # discover() reads it when called
    assert Repo.discover().kubernetes_version == "9.8.7"


def test_a_second_model_means_naming_one(tmp_path: Path) -> None:
    root = REPO.root
    shutil.copytree(root / "models" / "sklearn-iris", tmp_path / "models" / "sklearn-iris")
    shutil.copytree(root / "models" / "sklearn-iris", tmp_path / "models" / "xgb-iris")
    repo = Repo(tmp_path)
    assert repo.model_names == ("sklearn-iris", "xgb-iris")
    with pytest.raises(RepoError, match=r"2 models .*name one with --model"):
        repo.default_model()


def test_an_unreadable_pin_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "versions.yaml").write_text("kubernetes: [1.36\n")
    with pytest.raises(RepoError, match=r"versions\.yaml: not YAML"):
        _ = Repo(tmp_path).kubernetes_version
    (tmp_path / "versions.yaml").write_text("kubernetes: {}\n")
    with pytest.raises(RepoError, match=r"versions\.yaml: kubernetes\.version: expected"):
        _ = Repo(tmp_path).kubernetes_version
