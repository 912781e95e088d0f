"""The CRD cache: pinned bytes only, from CRD_DIR or the pinned URL."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kserve_gitops.upstream import crds
from tests import REPO


def _pin_file(tmp_path: Path, rows: list[crds.Pin]) -> Path:
    header = "file\tupstream\ttag\tpath\tcommit\tsha256\turl\n"
    body = "".join(f"{p.file}\t{p.upstream}\t{p.tag}\tp\tc\t{p.sha256}\t{p.url}\n" for p in rows)
    path = tmp_path / "crds.tsv"
    path.write_text(header + body)
    return path


def test_pin_list_matches_every_cached_file(crd_cache: list[Path]) -> None:
    pins = crds.pins(REPO)
    assert len(pins) == len(crd_cache) >= 18
    assert {p.file.split("/")[0] for p in pins} >= {"kserve", "istio", "flux", "argo-cd"}


def test_fills_cache_from_crd_dir_and_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crd_cache: list[Path]
) -> None:
    pin = next(p for p in crds.pins(REPO) if p.file.endswith("inferenceservices.yaml"))
    source = tmp_path / "src"
    (source / "kserve").mkdir(parents=True)
    shutil.copy(next(f for f in crd_cache if f.name == Path(pin.file).name), source / pin.file)
    monkeypatch.setenv("CRD_DIR", str(source))
    cache = tmp_path / "cache"
    [got] = crds.ensure(REPO, cache, _pin_file(tmp_path, [pin]))
    assert got == cache / pin.file and got.stat().st_size > 1_000_000


def test_checksum_mismatch_in_crd_dir_is_an_error_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pin = crds.pins(REPO)[0]
    source = tmp_path / "src"
    (source / pin.file).parent.mkdir(parents=True)
    (source / pin.file).write_text("kind: CustomResourceDefinition\n# tampered\n")
    monkeypatch.setenv("CRD_DIR", str(source))
    cache = tmp_path / "cache"
    expected = f"sha256 mismatch for {pin.file}.*expects {pin.sha256}"
    with pytest.raises(crds.CRDError, match=expected):
        crds.ensure(REPO, cache, _pin_file(tmp_path, [pin]))
    assert not (cache / pin.file).exists()


def test_tampered_cache_is_detected(tmp_path: Path) -> None:
    pin = crds.pins(REPO)[0]
    cache = tmp_path / "cache"
    (cache / pin.file).parent.mkdir(parents=True)
    (cache / pin.file).write_text("changed")
    with pytest.raises(crds.CRDError, match="sha256 mismatch"):
        crds.ensure(REPO, cache, _pin_file(tmp_path, [pin]))


def test_missing_file_in_crd_dir_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRD_DIR", str(tmp_path / "empty"))
    pin = crds.pins(REPO)[0]
    with pytest.raises(crds.CRDError, match=f"cannot read {pin.file} from CRD_DIR"):
        crds.ensure(REPO, tmp_path / "cache", _pin_file(tmp_path, [pin]))


def test_pin_row_missing_sha256_names_line(tmp_path: Path) -> None:
    path = tmp_path / "crds.tsv"
    path.write_text("file\tupstream\ttag\tpath\tcommit\tsha256\turl\na.yaml\tx/y\tv1\tp\tc\t\tu\n")
    with pytest.raises(crds.CRDError, match=r"crds.tsv:2: missing column\(s\) sha256"):
        crds.pins(REPO, path)


def test_pin_of_a_go_module_missing_from_crd_dir_comes_from_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("go") is None:
        pytest.skip("no Go toolchain: the module proxy is read with `go mod download`")
    monkeypatch.setenv("CRD_DIR", str(tmp_path / "empty"))
    pin = next(p for p in crds.pins(REPO) if p.gomodule)
    cols = (pin.file, pin.upstream, pin.tag, pin.path, "c", pin.sha256, pin.url, pin.gomodule)
    pin_file = tmp_path / "crds.tsv"
    pin_file.write_text(
        "file\tupstream\ttag\tpath\tcommit\tsha256\turl\tgomodule\n" + "\t".join(cols) + "\n"
    )
    [got] = crds.ensure(REPO, tmp_path / "cache", pin_file)
    assert got == tmp_path / "cache" / pin.file
    assert b"kind: CustomResourceDefinition" in got.read_bytes()
