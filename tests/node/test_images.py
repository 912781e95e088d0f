"""The cache of the real node's images and their import (kserve_gitops.node.images).

The fast tests need no root and build nothing real: the cache (a second run builds nothing) and
the import command line (a stand-in ctr). The import into a real containerd runs only with
KGOPS_CONTAINERD_BIN, a folder holding containerd and ctr (v2), as root, and only for the images
`make images` left in the cache."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kserve_gitops.localcluster.binaries import BuildError
from kserve_gitops.node import imagebuild, imagepins, images, oci
from kserve_gitops.repo import Repo
from tests import REPO
from tests.broken_copy import in_process
from tests.node.test_imagepins import default_cache
from tests.node.test_oci import small_archive


def fill(cache: Path) -> list[imagepins.Image]:
    pinned = imagepins.pinned(REPO)
    for image in pinned:
        small_archive(image.path, image.ref)
    return pinned


def test_a_second_run_builds_nothing(cache: Path) -> None:
    pinned = fill(cache)

    def refuse(image: imagepins.Image, repo: Repo) -> Path:
        raise AssertionError(f"built {image.name} though its archive is cached")

    lines: list[str] = []
    started = time.monotonic()
    found = images.ensure(REPO, lines.append, builders=dict.fromkeys(imagebuild.BUILDERS, refuse))
    assert time.monotonic() - started < 5
    assert lines == []
    assert found == {image.name: image.path for image in pinned}
    assert images.locate(REPO) == found


def test_only_what_is_missing_is_built(cache: Path) -> None:
    pinned = fill(cache)
    pinned[0].path.unlink()
    built: list[str] = []

    def record(image: imagepins.Image, repo: Repo) -> Path:
        built.append(image.name)
        return small_archive(image.path, image.ref)

    with pytest.raises(BuildError, match=rf"not built yet: {pinned[0].ref}; `make images`"):
        images.locate(REPO)
    images.ensure(REPO, lambda line: None, builders=dict.fromkeys(imagebuild.BUILDERS, record))
    assert built == [pinned[0].name]


def test_kgops_images_lists_the_cache(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(cache)
    done = in_process("images", REPO.root, capsys, "--list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(imagepins.pinned(REPO))
    assert all(" built " in line for line in lines)
    done = in_process("images", REPO.root, capsys, "--list", "--only", "nothing")
    assert done.returncode == 1
    assert "no image nothing" in done.stderr


def fake_ctr(tmp_path: Path, listed: str) -> tuple[Path, Path]:
    """A ctr that records its arguments and lists `listed`."""
    log = tmp_path / "ctr.log"
    ctr = tmp_path / "ctr"
    ctr.write_text(
        f'#!/bin/sh\necho "$@" >> {log}\n'
        f'case "$*" in *" images list -q") printf "%s\\n" {listed} ;; esac\n'
    )
    ctr.chmod(0o755)
    return ctr, log


def test_import_images_names_the_socket_namespace_and_archive(tmp_path: Path) -> None:
    archive = small_archive(tmp_path / "tiny.tar")
    ctr, log = fake_ctr(tmp_path, "dev.local/test/tiny:v1")
    sock = tmp_path / "containerd.sock"
    assert images.import_images(ctr, sock, archives=[archive]) == ["dev.local/test/tiny:v1"]
    images.import_images(
        ctr, sock, "other", [archive], labels={"io.cri-containerd.pinned": "pinned"}
    )
    assert log.read_text().splitlines() == [
        f"--address {sock} --namespace k8s.io images import --base-name dev.local/test/tiny "
        f"{archive}",
        f"--address {sock} --namespace k8s.io images list -q",
        f"--address {sock} --namespace other images import --base-name dev.local/test/tiny "
        f"--label io.cri-containerd.pinned=pinned {archive}",
        f"--address {sock} --namespace other images list -q",
    ]


def test_an_archive_not_built_is_named_before_any_import(tmp_path: Path) -> None:
    ctr, log = fake_ctr(tmp_path, "")
    with pytest.raises(BuildError, match=r"no archive .*gone.tar; `make images` builds them"):
        images.import_images(ctr, tmp_path / "sock", archives=[tmp_path / "gone.tar"])
    assert not log.exists()


def test_an_import_containerd_does_not_list_fails(tmp_path: Path) -> None:
    archive = small_archive(tmp_path / "tiny.tar")
    ctr, _ = fake_ctr(tmp_path, "something/else:v1")
    with pytest.raises(BuildError, match=r"does not list dev.local/test/tiny:v1"):
        images.import_images(ctr, tmp_path / "sock", archives=[archive])


# --- A real containerd (KGOPS_CONTAINERD_BIN), as root -----------------------------------------


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A containerd with its own root, state and socket under tmp_path; stopped and removed
    after the test. (ctr, socket)."""
    folder = os.environ.get("KGOPS_CONTAINERD_BIN")
    if not folder or not (Path(folder) / "containerd").is_file():
        pytest.skip("KGOPS_CONTAINERD_BIN (a folder with containerd and ctr v2) is not set")
    if os.geteuid() != 0:
        pytest.skip("containerd needs root")
    bin_dir = Path(folder)
    # The shim and runc, for the test that runs a container: from the folder, else PATH.
    path = f"{bin_dir}:{os.environ.get('PATH', '')}"
    base = Path(f"/run/kgops-img-test-{os.getpid()}")  # short: the socket path has a limit
    sock = base / "containerd.sock"
    config = base / "config.toml"
    base.mkdir(parents=True)
    config.write_text(
        "version = 3\n"
        f'root = "{tmp_path / "root"}"\nstate = "{base / "state"}"\n'
        f'[grpc]\n  address = "{sock}"\n'
        '[ttrpc]\n  address = ""\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", '
        '"io.containerd.cri.v1.images", "io.containerd.podsandbox.controller.v1.podsandbox"]\n'
    )
    log = (tmp_path / "containerd.log").open("w")
    proc = subprocess.Popen(
        [str(bin_dir / "containerd"), "--config", str(config)],
        stdout=log,
        stderr=log,
        start_new_session=True,
        env={**os.environ, "PATH": path},
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None, (tmp_path / "containerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "containerd did not start in 30 s"
            time.sleep(0.2)
        yield bin_dir / "ctr", sock
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for line in reversed(Path("/proc/mounts").read_text().splitlines()):
            point = line.split()[1]
            if point.startswith((str(tmp_path), str(base))):
                subprocess.run(["umount", point], check=False)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(tmp_path / "root", ignore_errors=True)


def test_containerd_imports_every_built_image(containerd: tuple[Path, Path]) -> None:
    ctr, sock = containerd
    present = [image for image in default_cache().values() if image.path.is_file()]
    if not present:
        pytest.skip("no image built here: `make images`")
    pin = {"io.cri-containerd.pinned": "pinned"}
    imported = images.import_images(ctr, sock, archives=[i.path for i in present], labels=pin)
    assert imported == [image.ref for image in present]

    def ctr_out(*args: str) -> str:
        argv = [str(ctr), "--address", str(sock), "-n", "k8s.io", *args]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    checked = ctr_out("images", "check").splitlines()
    listed = ctr_out("images", "list").splitlines()
    snapshots = ctr_out("snapshots", "list")
    for image in present:
        line = next(line for line in checked if line.startswith(image.ref))
        assert "complete" in line, line
        line = next(line for line in listed if line.startswith(image.ref))
        assert "io.cri-containerd.pinned=pinned" in line, line
        # Unpacked for the default snapshotter: the chain of its layers is a snapshot.
        diff_ids = oci.inspect(image.path, layers=False).config["rootfs"]["diff_ids"]
        chain = diff_ids[0]
        for diff_id in diff_ids[1:]:
            chain = "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
        assert chain in snapshots, f"{image.ref}: no snapshot {chain}"


RUN_NAMESPACE = "kgops-img-test"  # also the cgroup parent of `ctr run`, removed after


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_runtime_image_serves_the_model_from_containerd(
    containerd: tuple[Path, Path], tmp_path: Path
) -> None:
    """The sklearnserver image, imported and unpacked by containerd, run by runc as its own
    user with the repository's model: the V1 prediction of KServe's runtime."""
    ctr, sock = containerd
    image = default_cache()["sklearnserver"]
    if not image.path.is_file():
        pytest.skip(f"{image.ref} not built here: `make images`")
    if shutil.which("runc", path=f"{ctr.parent}:{os.environ.get('PATH', '')}") is None:
        pytest.skip("no runc beside containerd nor on PATH")
    images.import_images(ctr, sock, RUN_NAMESPACE, [image.path])
    base = [str(ctr), "--address", str(sock), "-n", RUN_NAMESPACE]
    port, model = free_port(), REPO.models / "sklearn-iris" / "v1"
    fifo = tmp_path / "fifo"
    fifo.mkdir()

    def ctr_run(*args: str, check: bool = True) -> str:
        done = subprocess.run([*base, *args], capture_output=True, text=True, check=False)
        assert done.returncode == 0 or not check, done.stderr
        return done.stdout

    # ctr run's arguments replace the entrypoint: these are the image's, then KServe's flags.
    ctr_run(
        "run",
        "-d",
        "--net-host",
        "--fifo-dir",
        str(fifo),
        "--mount",
        f"type=bind,src={model},dst=/mnt/models,options=rbind:ro",
        image.ref,
        "sk",
        *imagebuild.SKLEARN_ENTRYPOINT,
        "--model_name",
        "sklearn-iris",
        "--model_dir",
        "/mnt/models",
        "--http_port",
        str(port),
    )
    try:
        url = f"http://127.0.0.1:{port}/v1/models/sklearn-iris"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    assert json.load(resp)["ready"] is True
                break
            except OSError:
                assert time.monotonic() < deadline, "sklearnserver not ready in 120 s"
                time.sleep(0.5)
        request = urllib.request.Request(
            f"{url}:predict",
            data=json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert json.load(resp) == {"predictions": [0]}
        assert ctr_run("task", "exec", "--exec-id", "id", "sk", "id", "-u").strip() == "1000"
    finally:
        ctr_run("task", "kill", "-s", "SIGKILL", "sk", check=False)
        deadline = time.monotonic() + 30
        while "RUNNING" in ctr_run("task", "list", check=False) and time.monotonic() < deadline:
            time.sleep(0.5)
        ctr_run("task", "delete", "sk", check=False)
        ctr_run("container", "delete", "sk", check=False)
        for parent in Path("/sys/fs/cgroup").glob(f"*/{RUN_NAMESPACE}"):
            parent.rmdir()
