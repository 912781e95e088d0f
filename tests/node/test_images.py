"""The real node's images (kserve_gitops.node.images).

The fast tests need no root and build nothing real: the pins, the archive writer read back
(digests, diff_ids, entries, same bytes twice), the cache (a second run builds nothing) and the
import command line (a stand-in ctr). The tests of the real images read the archives `make
images` left in the cache (KGOPS_IMAGE_CACHE, else ~/.cache/kserve-gitops/images) and skip an
image that is not there: building them takes root (mmdebstrap, chroot) and minutes, which the
offline suite must not spend. The import into a real containerd runs only with
KGOPS_CONTAINERD_BIN, a folder holding containerd and ctr (v2), as root."""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kserve_gitops.localcluster.binaries import BuildError
from kserve_gitops.node import images
from kserve_gitops.repo import Repo
from tests import REPO
from tests.broken_copy import in_process


@functools.cache
def default_cache() -> dict[str, images.Image]:
    """The pinned images by name; their archives are looked up in the cache of the moment
    (the tests of the built images do not use the `cache` fixture)."""
    return {image.name: image for image in images.pinned(REPO)}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty image cache of the test's own."""
    monkeypatch.setenv(images.ENV_CACHE, str(tmp_path / "images"))
    return tmp_path / "images"


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
    base = images.LayerWriter(work / "base.tar.gz", "base")
    base.directory("etc")
    base.file("etc/passwd", images.PASSWD.encode())
    tree = images.LayerWriter(work / "tree.tar.gz", "tree")
    tree.tree(work / "tree", skip_contents=("dev",))
    layers = [base.close(), tree.close()]
    config = images.image_config(
        layers, user=user, entrypoint=["/bin/tool"], env=["A=1"], labels={"x": "y"}
    )
    images.write_archive(dest, ref, config, layers)
    shutil.rmtree(work)
    return dest


def test_pins_come_from_versions_yaml() -> None:
    versions = REPO.versions
    pinned = {image.name: image for image in images.pinned(REPO, versions)}
    assert set(pinned) == {
        "pause",
        "sklearnserver",
        *(f"knative-serving-{c}" for c in ("queue", "activator", "autoscaler", "controller")),
        "knative-serving-webhook",
        "coredns",
    }
    assert (
        pinned["pause"].ref == f"dev.local/kserve-gitops/pause:v{versions['kubernetes']['version']}"
    )
    assert pinned["sklearnserver"].version == versions["kserve"]["version"]
    assert pinned["sklearnserver"].build.endswith(f"uv{versions['images']['uv']}")
    queue = pinned["knative-serving-queue"]
    serving = versions["localCluster"]["knativeServing"]
    assert queue.ref == f"dev.local/kserve-gitops/knative-serving-queue:{serving}"
    # Knative skips tag-to-digest resolution only for these registries: nothing is pulled.
    assert all(
        i.ref.split("/")[0] in {"dev.local", "kind.local", "ko.local"} for i in pinned.values()
    )


def test_a_missing_pin_names_the_field() -> None:
    versions = REPO.versions
    broken = {**versions, "images": {**versions["images"], "uv": ""}}
    with pytest.raises(BuildError, match=r"versions.yaml: images.uv: no version"):
        images.pinned(REPO, broken)


def test_cache_follows_the_environment(cache: Path) -> None:
    assert images.cache_root() == cache
    image = images.pinned(REPO)[0]
    assert image.path == cache / image.name / image.version / image.build / images.ARCHIVE


def test_an_archive_reads_back_digest_for_digest(tmp_path: Path) -> None:
    archive = images.inspect(small_archive(tmp_path / "tiny.tar"))
    assert archive.ref == "dev.local/test/tiny:v1"
    descriptor = archive.index["manifests"][0]
    assert descriptor["annotations"] == {
        "io.containerd.image.name": "dev.local/test/tiny:v1",
        "org.opencontainers.image.ref.name": "v1",
    }
    assert descriptor["platform"] == {"architecture": images.arch(), "os": "linux"}
    assert archive.config["config"]["User"] == "65532"
    assert archive.config["config"]["Entrypoint"] == ["/bin/tool"]
    assert [layer["mediaType"] for layer in archive.manifest["layers"]] == [images.OCI_LAYER] * 2
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
    tree = images.inspect(path)
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
    base = images.LayerWriter(tmp_path / "a.tar.gz")
    base.file("x", b"same")
    layers = [base.close()]
    config = images.image_config(layers, user="1", entrypoint=["/x"], env=[], labels={})
    first = images.write_archive(tmp_path / "one.tar", "dev.local/t/x:v1", config, layers)
    second = images.write_archive(tmp_path / "two.tar", "dev.local/t/x:v1", config, layers)
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
        images.inspect(broken)


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    layer = images.Layer(tmp_path / "gone.tar.gz", "sha256:" + "0" * 64, "sha256:" + "1" * 64, 1)
    config = images.image_config([layer], user="1", entrypoint=["/x"], env=[], labels={})
    with pytest.raises(FileNotFoundError):
        images.write_archive(
            tmp_path / "out" / "image.oci.tar", "dev.local/t/x:v1", config, [layer]
        )
    assert list((tmp_path / "out").iterdir()) == []


def fill(cache: Path) -> list[images.Image]:
    pinned = images.pinned(REPO)
    for image in pinned:
        small_archive(image.path, image.ref)
    return pinned


def test_a_second_run_builds_nothing(cache: Path) -> None:
    pinned = fill(cache)

    def refuse(image: images.Image, repo: Repo) -> Path:
        raise AssertionError(f"built {image.name} though its archive is cached")

    lines: list[str] = []
    started = time.monotonic()
    found = images.ensure(REPO, lines.append, builders=dict.fromkeys(images.BUILDERS, refuse))
    assert time.monotonic() - started < 5
    assert lines == []
    assert found == {image.name: image.path for image in pinned}
    assert images.locate(REPO) == found


def test_only_what_is_missing_is_built(cache: Path) -> None:
    pinned = fill(cache)
    pinned[0].path.unlink()
    built: list[str] = []

    def record(image: images.Image, repo: Repo) -> Path:
        built.append(image.name)
        return small_archive(image.path, image.ref)

    with pytest.raises(BuildError, match=rf"not built yet: {pinned[0].ref}; `make images`"):
        images.locate(REPO)
    images.ensure(REPO, lambda line: None, builders=dict.fromkeys(images.BUILDERS, record))
    assert built == [pinned[0].name]


def test_kgops_images_lists_the_cache(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(cache)
    done = in_process("images", REPO.root, capsys, "--list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(images.pinned(REPO))
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


# --- The archives `make images` built (skipped where the cache does not hold them) -----------


def built(name: str) -> images.Archive:
    """The archive of `name` in the cache, read once per session: every layer hashed and
    listed, except the runtime's (650 MB of tar; containerd's import hashes it)."""
    image = default_cache()[name]
    if not image.path.is_file():
        pytest.skip(f"{image.ref} not built here ({image.path}): `make images` builds it (root)")
    return _read(image.path, name != "sklearnserver")


@functools.cache
def _read(path: Path, layers: bool) -> images.Archive:
    return images.inspect(path, list_layers=layers, layers=layers)


def test_the_pause_image() -> None:
    archive = built("pause")
    assert archive.ref == default_cache()["pause"].ref
    assert archive.config["config"]["User"] == "65535:65535"
    assert archive.config["config"]["Entrypoint"] == ["/pause"]
    assert archive.layer_names == [["pause"]]


@pytest.mark.parametrize("cmd", images.KNATIVE_COMMANDS)
def test_the_knative_images(cmd: str) -> None:
    archive = built(f"knative-serving-{cmd}")
    config = archive.config["config"]
    assert config["User"] == "65532"
    assert config["Entrypoint"] == [f"/ko-app/{cmd}"]
    assert "KO_DATA_PATH=/var/run/ko" in config["Env"]
    base, app = archive.layer_names
    assert {"etc/passwd", "etc/group", "etc/ssl/certs/ca-certificates.crt", "tmp"} <= set(base)
    assert f"ko-app/{cmd}" in app and "var/run/ko" in app


def test_the_knative_images_share_their_base() -> None:
    digests = {
        built(f"knative-serving-{cmd}").manifest["layers"][0]["digest"]
        for cmd in images.KNATIVE_COMMANDS
    }
    assert len(digests) == 1


def test_the_sklearnserver_image() -> None:
    archive = built("sklearnserver")
    config = archive.config["config"]
    # KServe's python/sklearn.Dockerfile: USER 1000, ENTRYPOINT, PYTHONPATH, the venv first.
    assert config["User"] == "1000"
    assert config["Entrypoint"] == ["python", "-m", "sklearnserver"]
    assert "PYTHONPATH=/sklearnserver" in config["Env"]
    assert any(e.startswith("PATH=/prod_venv/bin:") for e in config["Env"])
    want = REPO.versions["kserve"]["sklearnServer"]["scikitLearn"]
    assert config["Labels"]["dev.kserve-gitops.scikit-learn"] == want


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
        diff_ids = images.inspect(image.path, layers=False).config["rootfs"]["diff_ids"]
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
        *images.SKLEARN_ENTRYPOINT,
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
