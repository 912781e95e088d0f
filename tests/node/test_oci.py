"""The OCI image archive (kserve_gitops.node.oci): written, then read back (digests, diff_ids,
entries, same bytes twice); no root and nothing real built."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from kserve_gitops.localcluster.binaries import BuildError
from kserve_gitops.node import imagebuild, oci


def small_archive(dest: Path, ref: str = "dev.local/test/tiny:v1", user: str = "65532") -> Path:
    """A two-layer image: a base of synthetic entries, a layer from a folder."""
    work = dest.parent / f"{dest.name}.work"
    (work / "tree" / "bin").mkdir(parents=True, exist_ok=True)
    (work / "tree" / "bin" / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (work / "tree" / "bin" / "tool").chmod(0o755)
    os.link(work / "tree" / "bin" / "tool", work / "tree" / "bin" / "tool-again")
    (work / "tree" / "bin" / "alias").symlink_to("tool")
    (work / "tree" / "dev").mkdir()
    (work / "tree" / "dev" / "null-ish").write_text("skipped with dev's contents")
    base = oci.LayerWriter(work / "base.tar.gz", "base")
    base.directory("etc")
    base.file("etc/passwd", imagebuild.PASSWD.encode())
    tree = oci.LayerWriter(work / "tree.tar.gz", "tree")
    tree.tree(work / "tree", skip_contents=("dev",))
    layers = [base.close(), tree.close()]
    config = oci.image_config(
        layers, user=user, entrypoint=["/bin/tool"], env=["A=1"], labels={"x": "y"}
    )
    oci.write_archive(dest, ref, config, layers)
    shutil.rmtree(work)
    return dest


def test_an_archive_reads_back_digest_for_digest(tmp_path: Path) -> None:
    archive = oci.inspect(small_archive(tmp_path / "tiny.tar"))
    assert archive.ref == "dev.local/test/tiny:v1"
    descriptor = archive.index["manifests"][0]
    assert descriptor["annotations"] == {
        "io.containerd.image.name": "dev.local/test/tiny:v1",
        "org.opencontainers.image.ref.name": "v1",
    }
    assert descriptor["platform"] == {"architecture": oci.arch(), "os": "linux"}
    assert archive.config["config"]["User"] == "65532"
    assert archive.config["config"]["Entrypoint"] == ["/bin/tool"]
    assert [layer["mediaType"] for layer in archive.manifest["layers"]] == [oci.OCI_LAYER] * 2
    assert archive.layer_names == [
        ["etc", "etc/passwd"],
        ["bin", "bin/alias", "bin/tool", "bin/tool-again", "dev"],  # dev's contents left out
    ]


def test_entries_have_fixed_times_and_numeric_owners_and_links_survive(tmp_path: Path) -> None:
    path = small_archive(tmp_path / "tiny.tar")
    with tarfile.open(path) as outer:
        assert [m.name for m in outer.getmembers()][-2:] == ["index.json", "oci-layout"]
        assert {m.mtime for m in outer.getmembers()} == {0}
        manifest = archive_manifest(outer)
        digest = manifest["layers"][0]["digest"].split(":")[1]
        data = outer.extractfile(f"blobs/sha256/{digest}").read()  # type: ignore[union-attr]
    assert data[4:8] == b"\0\0\0\0"  # no timestamp in the gzip header
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as layer:
        for member in layer.getmembers():
            assert (member.mtime, member.uname, member.gname) == (0, "", "")
    tree = oci.inspect(path)
    assert tree.layer_names[1][3] == "bin/tool-again"
    with tarfile.open(path) as outer:
        digest = archive_manifest(outer)["layers"][1]["digest"].split(":")[1]
        data = outer.extractfile(f"blobs/sha256/{digest}").read()  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as layer:
        members = {m.name: m for m in layer.getmembers()}
    assert members["bin/alias"].issym() and members["bin/alias"].linkname == "tool"
    assert members["bin/tool-again"].islnk() or members["bin/tool"].islnk()
    assert members["bin/tool"].mode & 0o777 == 0o755


def archive_manifest(outer: tarfile.TarFile) -> dict:
    index = json.load(outer.extractfile("index.json"))  # type: ignore[arg-type]
    digest = index["manifests"][0]["digest"].split(":")[1]
    return json.load(outer.extractfile(f"blobs/sha256/{digest}"))  # type: ignore[arg-type]


def test_the_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    base = oci.LayerWriter(tmp_path / "a.tar.gz")
    base.file("x", b"same")
    layers = [base.close()]
    config = oci.image_config(layers, user="1", entrypoint=["/x"], env=[], labels={})
    first = oci.write_archive(tmp_path / "one.tar", "dev.local/t/x:v1", config, layers)
    second = oci.write_archive(tmp_path / "two.tar", "dev.local/t/x:v1", config, layers)
    assert first.read_bytes() == second.read_bytes()


def test_a_damaged_blob_is_refused(tmp_path: Path) -> None:
    path = small_archive(tmp_path / "tiny.tar")
    broken = tmp_path / "broken.tar"
    with tarfile.open(path) as src, tarfile.open(broken, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if data and member.name.startswith("blobs/") and data[:2] == b"\x1f\x8b":
                data = data[:-9] + bytes([data[-9] ^ 1]) + data[-8:]  # one bit of a layer
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    with pytest.raises(BuildError, match=r"blob sha256:\w+ holds sha256:"):
        oci.inspect(broken)


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    layer = oci.Layer(tmp_path / "gone.tar.gz", "sha256:" + "0" * 64, "sha256:" + "1" * 64, 1)
    config = oci.image_config([layer], user="1", entrypoint=["/x"], env=[], labels={})
    with pytest.raises(FileNotFoundError):
        oci.write_archive(tmp_path / "out" / "image.oci.tar", "dev.local/t/x:v1", config, [layer])
    assert list((tmp_path / "out").iterdir()) == []
