"""The container images of the real node, built here from the pinned sources and never pulled:
each an OCI image archive (`ctr images import` reads it), cached by name and version outside the
checkout, so that a second run builds nothing.

    kgops images                       # build what is missing (make images)
    kgops images --list                # each image's reference, state and archive
    kgops images --import SOCK --ctr CTR   # also import them all into a running containerd

- pause: `build/pause/linux/pause.c` of k8s.io/kubernetes at kubernetes.version, compiled
  statically with gcc and the flags of its Makefile (`-DVERSION=v<TAG>-<REV>`); user
  65535:65535, entrypoint /pause, as its Dockerfile says.
- sklearnserver: KServe's runtime from `python/` of the Go module github.com/kserve/kserve at
  kserve.version, the way its `python/sklearn.Dockerfile` builds it: a venv at /prod_venv synced
  with uv from sklearnserver's own `uv.lock` (`uv sync --active --frozen`, upstream's default
  groups), /kserve, /storage and /sklearnserver copied in, user `kserve` (1000), PYTHONPATH
  /sklearnserver, entrypoint `python -m sklearnserver`. The base, in place of
  python:3.11-slim-bookworm, is what debian:bookworm-slim is (mmdebstrap's minbase: grpc's
  wheel needs its libstdc++) plus Debian's python3 on the pinned suite, without docs, man pages,
  locales or apt lists (root: mmdebstrap and chroot). Before the layer is written, uid 1000
  imports sklearnserver in the chroot, and the scikit-learn it reports and the one installed
  must be kserve.sklearnServer.scikitLearn.
- knative-serving-{queue,activator,autoscaler,controller,webhook}: knative.dev/serving at
  localCluster.knativeServing, static Go binaries built by kserve_gitops.controllers.binaries
  (shared with its cache), laid out the way ko lays them out: /ko-app/<cmd>, KO_DATA_PATH
  /var/run/ko, numeric user 65532, a minimal /etc/passwd and /etc/group and the CA bundle.

The archives are written here, not by umoci: a few dozen lines of tarfile, json and hashlib give
archives that are the same bytes for the same inputs (entries sorted, mtimes and owners fixed,
gzip without a timestamp), need no root and no extra package, and tests can read them back.
Only the sklearnserver image keeps its files' own mtimes: Python checks its .pyc files against
them, and apt and uv make that root file system differ from run to run anyway.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from kserve_gitops.base.pinned import user_cache
from kserve_gitops.controllers import binaries as controller_binaries
from kserve_gitops.localcluster.binaries import BuildError, go_version, pin_error
from kserve_gitops.repo import Repo

ENV_CACHE = "KGOPS_IMAGE_CACHE"
# Knative resolves no tag to a digest for these registries (config-deployment
# registries-skipping-tag-resolving: kind.local, ko.local, dev.local), so nothing is pulled.
REGISTRY = "dev.local/kserve-gitops"
ARCHIVE = "image.oci.tar"
KUBERNETES = "k8s.io/kubernetes"
KNATIVE_COMMANDS = ("queue", "activator", "autoscaler", "controller", "webhook")
# ko's layout and its default base's user (Knative's .ko.yaml: a static, nonroot base).
KO_APP = "ko-app"
KO_DATA = "var/run/ko"
NONROOT = 65532
PAUSE_USER = "65535:65535"
# KServe's sklearn.Dockerfile: the venv, the user, the entrypoint.
VENV = "/prod_venv"
KSERVE_UID = 1000
SKLEARN_ENTRYPOINT = ["python", "-m", "sklearnserver"]
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Every synthetic entry and every config is dated here (SOURCE_DATE_EPOCH 0, as ko does).
EPOCH = 0
CREATED = "1970-01-01T00:00:00Z"
# gzip's default 9 costs twice the time of 6 for a few percent on the runtime's layer.
GZIP_LEVEL = 6
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
# containerd names an imported image by this annotation when it is a full reference
# (core/transfer/image/imagestore.go imageName); ref.name alone would get an import- prefix.
CONTAINERD_NAME = "io.containerd.image.name"


def cache_root() -> Path:
    """Outside the checkout, beside the binaries' cache: $KGOPS_IMAGE_CACHE, else the user's
    cache directory (kserve-gitops/images)."""
    return user_cache("images", ENV_CACHE)


def arch() -> str:
    """The OCI architecture of this machine (amd64, arm64)."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


@dataclass(frozen=True)
class Image:
    """One image: `kind` says how it is built; `build` is the part of its cache key that is
    not its version (the Go version of its binary, the compiler, the base and uv)."""

    name: str
    version: str
    kind: str  # "pause" | "sklearnserver" | "knative"
    build: str

    @property
    def ref(self) -> str:
        return f"{REGISTRY}/{self.name}:{self.version}"

    @property
    def path(self) -> Path:
        return cache_root() / self.name / self.version / self.build / ARCHIVE


def _pin(repo: Repo, versions: dict, dotted: str) -> str:
    value: Any = versions
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if not value:
        raise pin_error(repo, dotted)
    return str(value)


def gcc_version() -> str:
    """`gcc12`: the compiler's major version, part of the pause image's cache key."""
    if shutil.which("gcc") is None:
        raise BuildError("gcc: not on PATH; the pause image is compiled from C (`make images`)")
    out = subprocess.run(["gcc", "-dumpversion"], capture_output=True, text=True, check=True)
    return f"gcc{out.stdout.strip()}"


def pinned(repo: Repo, versions: dict | None = None) -> list[Image]:
    """The images at the versions of versions.yaml (the platform's pins; `versions` in its
    place)."""
    versions = versions or repo.versions
    kube = _pin(repo, versions, "kubernetes.version")
    kserve = _pin(repo, versions, "kserve.version")
    serving = _pin(repo, versions, "localCluster.knativeServing")
    suite = _pin(repo, versions, "images.debian.suite")
    uv = _pin(repo, versions, "images.uv")
    gover = go_version()
    return [
        Image("pause", f"v{kube}", "pause", gcc_version()),
        Image("sklearnserver", kserve, "sklearnserver", f"{suite}-uv{uv}"),
        *(Image(f"knative-serving-{cmd}", serving, "knative", gover) for cmd in KNATIVE_COMMANDS),
        Image("coredns", _pin(repo, versions, "node.coredns"), "coredns", gover),
    ]


# ---------------------------------------------------------------------------------------------
# The OCI image archive: blobs/sha256/<digest>, index.json, oci-layout in one tar.


class _Hashing:
    """A write-only file that hashes and counts what passes through to `out`."""

    def __init__(self, out: BinaryIO | Any) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()

    def tell(self) -> int:
        return self.size

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha.hexdigest()}"


@dataclass(frozen=True)
class Layer:
    """A gzip-compressed tar layer in `path`: `digest` of the compressed bytes (the blob),
    `diff_id` of the tar (the config's rootfs)."""

    path: Path
    digest: str
    diff_id: str
    size: int
    comment: str = ""


def entry(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    size: int = 0,
    linkname: str = "",
) -> tarfile.TarInfo:
    """A tar entry with fixed time and numeric owner only."""
    info = tarfile.TarInfo(name.strip("/"))
    info.type, info.mode, info.uid, info.gid = kind, mode, uid, gid
    info.size, info.linkname, info.mtime = size, linkname, EPOCH
    info.uname = info.gname = ""
    return info


@dataclass
class LayerWriter:
    """Streams a layer to `path` (gzip, no timestamp in its header), hashing both forms."""

    path: Path
    comment: str = ""
    _names: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._file = self.path.open("wb")
        self._blob = _Hashing(self._file)
        self._gzip = gzip.GzipFile(
            filename="", mode="wb", fileobj=self._blob, mtime=0, compresslevel=GZIP_LEVEL
        )  # type: ignore[arg-type]
        self._tar_hash = _Hashing(self._gzip)
        # Closed by close(), with the gzip stream and the file under it.
        self.tar = tarfile.TarFile(fileobj=self._tar_hash, mode="w", format=tarfile.PAX_FORMAT)  # type: ignore[arg-type]

    def add(self, info: tarfile.TarInfo, data: bytes | BinaryIO | None = None) -> None:
        if info.name in self._names:
            raise BuildError(f"layer {self.path.name}: {info.name} twice")
        self._names.add(info.name)
        if isinstance(data, bytes):
            info.size = len(data)
            data = io.BytesIO(data)
        self.tar.addfile(info, data)

    def directory(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        self.add(entry(name, tarfile.DIRTYPE, mode, uid, gid))

    def file(self, name: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        self.add(entry(name, tarfile.REGTYPE, mode, uid, gid), data)

    def tree(self, root: Path, skip_contents: Iterable[str] = ()) -> None:
        """Every file under `root`, sorted, with its own mode, numeric owner and mtime (hard
        links kept); the folders of `skip_contents` go in empty."""
        skip = set(skip_contents)
        for path in _walk(root, skip):
            arcname = path.relative_to(root).as_posix()
            info = self.tar.gettarinfo(str(path), arcname)
            info.uname = info.gname = ""
            info.pax_headers = {}
            if info.isreg():
                with path.open("rb") as data:
                    self.add(info, data)
            elif info.isdev() or info.isfifo():
                continue  # the runtime makes /dev; an image carries no device nodes
            else:
                self.add(info)

    def close(self) -> Layer:
        self.tar.close()
        self._gzip.close()
        self._file.close()
        return Layer(
            self.path, self._blob.digest, self._tar_hash.digest, self._blob.size, self.comment
        )


def _walk(root: Path, skip: set[str], top: Path | None = None) -> Iterator[Path]:
    """The paths under `root` in sorted order, parents first, not into symlinks nor into the
    folders of `skip` (paths relative to `top`, the first `root`)."""
    top = top or root
    for name in sorted(os.listdir(root)):
        path = root / name
        yield path
        if path.is_dir() and not path.is_symlink() and path.relative_to(top).as_posix() not in skip:
            yield from _walk(path, skip, top)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def image_config(
    layers: list[Layer],
    *,
    user: str,
    entrypoint: list[str],
    env: list[str],
    labels: dict[str, str],
    cmd: list[str] | None = None,
    workdir: str = "",
) -> dict[str, Any]:
    """The OCI image config of a Linux image for this machine's architecture."""
    config: dict[str, Any] = {"User": user, "Entrypoint": entrypoint, "Env": env, "Labels": labels}
    if cmd:
        config["Cmd"] = cmd
    if workdir:
        config["WorkingDir"] = workdir
    return {
        "created": CREATED,
        "architecture": arch(),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [
            {"created": CREATED, "created_by": layer.comment or "kserve-gitops"} for layer in layers
        ],
    }


def write_archive(dest: Path, ref: str, config: dict[str, Any], layers: list[Layer]) -> Path:
    """The OCI image layout of one image as a tar at `dest` (written beside it, then renamed):
    the index names it `ref` for containerd and by its tag for the OCI ref.name."""
    config_blob = _json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": _sha(config_blob), "size": len(config_blob)},
        "layers": [
            {"mediaType": OCI_LAYER, "digest": layer.digest, "size": layer.size} for layer in layers
        ],
    }
    manifest_blob = _json(manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": _sha(manifest_blob),
                "size": len(manifest_blob),
                "platform": {"architecture": config["architecture"], "os": config["os"]},
                "annotations": {CONTAINERD_NAME: ref, REF_NAME: ref.rsplit(":", 1)[1]},
            }
        ],
    }
    blobs: dict[str, bytes | Path] = {
        _sha(config_blob): config_blob,
        _sha(manifest_blob): manifest_blob,
        **{layer.digest: layer.path for layer in layers},
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}-", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            tar.addfile(entry("blobs", tarfile.DIRTYPE, 0o755))
            tar.addfile(entry("blobs/sha256", tarfile.DIRTYPE, 0o755))
            for digest in sorted(blobs):
                content = blobs[digest]
                name = f"blobs/sha256/{digest.split(':', 1)[1]}"
                if isinstance(content, bytes):
                    tar.addfile(entry(name, size=len(content)), io.BytesIO(content))
                else:
                    with content.open("rb") as data:
                        tar.addfile(entry(name, size=content.stat().st_size), data)
            for name, data in (
                ("index.json", _json(index)),
                ("oci-layout", _json({"imageLayoutVersion": "1.0.0"})),
            ):
                tar.addfile(entry(name, size=len(data)), io.BytesIO(data))
        tmp.chmod(0o644)
        tmp.rename(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


@dataclass(frozen=True)
class Archive:
    """What an archive holds, every blob's digest and every layer's diff_id checked."""

    ref: str
    index: dict[str, Any]
    manifest: dict[str, Any]
    config: dict[str, Any]
    layer_names: list[list[str]]  # the entries of each layer, in order


class _HashingReader:
    """A read-only file that hashes what is read from `source`."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.sha = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.sha.update(data)
        return data

    def drain(self) -> str:
        while self.read(1 << 20):
            pass
        return f"sha256:{self.sha.hexdigest()}"


def inspect(path: Path, list_layers: bool = True, layers: bool = True) -> Archive:
    """Read an archive back, streaming; BuildError on a blob whose bytes do not match its
    digest, a layer whose tar does not match its diff_id, or a layout that is not one image.
    `layers` False reads the index, manifest and config only (no layer is hashed)."""
    with tarfile.open(path) as tar:
        members = {m.name: m for m in tar.getmembers()}

        def open_blob(digest: str) -> Any:
            member = members.get(f"blobs/sha256/{digest.split(':', 1)[-1]}")
            handle = tar.extractfile(member) if member else None
            if handle is None:
                raise BuildError(f"{path}: no blob {digest}")
            return handle

        def blob(digest: str) -> bytes:
            reader = _HashingReader(open_blob(digest))
            data = reader.read()
            if (actual := reader.drain()) != digest:
                raise BuildError(f"{path}: blob {digest} holds {actual}")
            return data

        def named(name: str) -> dict[str, Any]:
            handle = tar.extractfile(members[name]) if name in members else None
            if handle is None:
                raise BuildError(f"{path}: no {name}")
            return json.loads(handle.read())

        if named("oci-layout").get("imageLayoutVersion") != "1.0.0":
            raise BuildError(f"{path}: oci-layout is not version 1.0.0")
        index = named("index.json")
        if len(index.get("manifests") or []) != 1:
            raise BuildError(f"{path}: index.json should list one manifest")
        descriptor = index["manifests"][0]
        manifest = json.loads(blob(descriptor["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(manifest["layers"]):
            raise BuildError(f"{path}: {len(manifest['layers'])} layers, {len(diff_ids)} diff_ids")
        names: list[list[str]] = []
        for layer, diff_id in zip(manifest["layers"], diff_ids, strict=True):
            if not layers:
                break
            if (actual := _HashingReader(open_blob(layer["digest"])).drain()) != layer["digest"]:
                raise BuildError(f"{path}: blob {layer['digest']} holds {actual}")
            with gzip.GzipFile(fileobj=open_blob(layer["digest"])) as stream:
                reader = _HashingReader(stream)
                if list_layers:
                    with tarfile.open(fileobj=reader, mode="r|") as layer_tar:  # type: ignore[call-overload]
                        names.append([member.name for member in layer_tar])
                if reader.drain() != diff_id:
                    raise BuildError(f"{path}: layer {layer['digest']} is not diff_id {diff_id}")
    return Archive(descriptor["annotations"][CONTAINERD_NAME], index, manifest, config, names)


# ---------------------------------------------------------------------------------------------
# The builders.


def _run(argv: list[str], what: str, **kwargs: Any) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
        raise BuildError(f"{what}: `{shlex.join(argv)}` exited {proc.returncode}\n{tail}")
    return proc.stdout


def _workdir(name: str) -> Path:
    work = cache_root() / "_work"
    work.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))


def _labels(source: str, version: str, **extra: str) -> dict[str, str]:
    return {
        "org.opencontainers.image.source": source,
        "org.opencontainers.image.version": version,
        **extra,
    }


def build_pause(image: Image, repo: Repo) -> Path:
    """pause.c of the pinned Kubernetes, static, stripped; the Dockerfile's user and
    entrypoint on an empty base."""
    src = controller_binaries.module_dir(KUBERNETES, image.version) / "build" / "pause"
    tag = re.search(r"^TAG \?= (\S+)", (src / "Makefile").read_text(), re.M)
    if tag is None:
        raise BuildError(f"{src}/Makefile: no `TAG ?=` line (the pause version)")
    work = _workdir("pause")
    try:
        out = work / "pause"
        # The Makefile's CFLAGS; its REV is `git describe` of the release, the module's version.
        cflags = ["-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{tag[1]}-{image.version}"]
        _run(["gcc", *cflags, "-o", str(out), str(src / "linux" / "pause.c")], "pause")
        _run(["strip", str(out)], "pause")
        writer = LayerWriter(work / "layer.tar.gz", f"pause.c of {KUBERNETES}@{image.version}")
        writer.file("pause", out.read_bytes(), 0o755)
        layers = [writer.close()]
        config = image_config(
            layers,
            user=PAUSE_USER,
            entrypoint=["/pause"],
            env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            labels=_labels(f"{KUBERNETES}@{image.version}/build/pause", f"{tag[1]}"),
        )
        return write_archive(image.path, image.ref, config, layers)
    finally:
        shutil.rmtree(work, ignore_errors=True)


PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    f"nonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
)
GROUP = f"root:x:0:\nnobody:x:65534:\nnonroot:x:{NONROOT}:\n"


def static_base(path: Path) -> Layer:
    """The base layer of the Go images, in place of ko's static base: the users (65532
    nonroot), the CA bundle, /tmp. The same bytes for every image that shares it."""
    if not CA_BUNDLE.is_file():
        raise BuildError(f"{CA_BUNDLE}: no CA bundle (apt-get install ca-certificates)")
    writer = LayerWriter(path, "static base: passwd, group, CA certificates, nonroot home")
    writer.directory("etc")
    writer.file("etc/group", GROUP.encode())
    writer.file("etc/nsswitch.conf", b"hosts: files dns\n")
    writer.file("etc/passwd", PASSWD.encode())
    writer.directory("etc/ssl")
    writer.directory("etc/ssl/certs")
    writer.file("etc/ssl/certs/ca-certificates.crt", CA_BUNDLE.read_bytes())
    writer.directory("home")
    writer.directory("home/nonroot", 0o700, NONROOT, NONROOT)
    writer.directory("tmp", 0o1777)
    writer.directory("var")
    writer.directory("var/run")
    return writer.close()


def build_knative(image: Image, repo: Repo) -> Path:
    """A Knative Serving command as ko builds its image: the static binary at /ko-app/<cmd>,
    its kodata (the module zip carries none: upstream's are symlinks into .git) at
    KO_DATA_PATH, user 65532."""
    cmd = image.name.removeprefix("knative-serving-")
    ctl = controller_binaries.Controller(
        image.name, controller_binaries.KNATIVE_SERVING, image.version, f"cmd/{cmd}"
    )
    binary = controller_binaries.build(ctl, image.build)
    module = controller_binaries.module_dir(controller_binaries.KNATIVE_SERVING, image.version)
    kodata = module / "cmd" / cmd / "kodata"
    work = _workdir(image.name)
    try:
        base = static_base(work / "base.tar.gz")
        writer = LayerWriter(work / "app.tar.gz", f"ko layout of {ctl.package}@{image.version}")
        writer.directory(KO_APP, 0o555)
        writer.add(
            entry(f"{KO_APP}/{cmd}", mode=0o555, size=binary.stat().st_size), binary.open("rb")
        )
        writer.directory("var")
        writer.directory("var/run")
        writer.directory(KO_DATA, 0o555)
        if kodata.is_dir():
            for path in _walk(kodata, set()):
                name = f"{KO_DATA}/{path.relative_to(kodata).as_posix()}"
                if path.is_dir():
                    writer.directory(name, 0o555)
                elif path.is_file():
                    writer.file(name, path.read_bytes(), 0o444)
        layers = [base, writer.close()]
        config = image_config(
            layers,
            user=str(NONROOT),
            entrypoint=[f"/{KO_APP}/{cmd}"],
            env=[
                f"PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/{KO_APP}",
                f"SSL_CERT_FILE={CA_BUNDLE}",
                f"KO_DATA_PATH=/{KO_DATA}",
            ],
            labels=_labels(f"{ctl.package}@{image.version}", image.version),
        )
        return write_archive(image.path, image.ref, config, layers)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def uv_binary(version: str) -> Path:
    """uv <version> from its PyPI wheel (pip download), cached under the image cache."""
    dest = cache_root() / "_tools" / "uv" / version / "uv"
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".uv-", dir=dest.parent))
    try:
        machine = platform.machine()
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--platform",
                f"manylinux_2_17_{machine}",
                "--python-version",
                "3.11",
                "-d",
                str(tmp),
                f"uv=={version}",
            ],
            f"uv {version}",
        )
        wheel = next(tmp.glob(f"uv-{version}-*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            (tmp / "uv").write_bytes(whl.read(f"uv-{version}.data/scripts/uv"))
        (tmp / "uv").chmod(0o755)
        (tmp / "uv").rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _mounts_under(folder: Path) -> list[str]:
    prefix = str(folder.resolve()) + "/"
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    return [p for p in points if p.startswith(prefix)]


def _remove_build_dir(work: Path) -> None:
    """Remove a build folder, never through a mount point left under it."""
    left = _mounts_under(work)
    for point in sorted(left, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)
    if _mounts_under(work):
        raise BuildError(f"{work}: mounts left under it: {', '.join(_mounts_under(work))}")
    shutil.rmtree(work, ignore_errors=True)


def _metadata_version(site: Path, dist: str) -> str | None:
    for meta in site.glob(f"{dist}-*.dist-info/METADATA"):
        for line in meta.read_text().splitlines():
            if line.startswith("Version: "):
                return line.split(": ", 1)[1].strip()
    return None


def build_sklearnserver(image: Image, repo: Repo) -> Path:
    """KServe's sklearn runtime as python/sklearn.Dockerfile builds it, from the module zip of
    github.com/kserve/kserve at kserve.version, on a Debian root file system (mmdebstrap)."""
    versions = repo.versions
    suite = _pin(repo, versions, "images.debian.suite")
    mirror = _pin(repo, versions, "images.debian.mirror")
    want = _pin(repo, versions, "kserve.sklearnServer.scikitLearn")
    if os.geteuid() != 0:
        raise BuildError(
            f"{image.name}: mmdebstrap and chroot need root (run `make images` as root)"
        )
    if shutil.which("mmdebstrap") is None:
        raise BuildError(f"{image.name}: mmdebstrap is not installed (`make images` installs it)")
    uv = uv_binary(_pin(repo, versions, "images.uv"))
    python = controller_binaries.module_dir(controller_binaries.KSERVE, image.version) / "python"
    if not (python / "sklearnserver" / "uv.lock").is_file():
        raise BuildError(f"{python}: no sklearnserver/uv.lock in the module zip")
    work = _workdir(image.name)
    try:
        src = work / "src"
        for folder in ("kserve", "storage", "sklearnserver"):
            shutil.copytree(python / folder, src / folder)
        for path in [src, *src.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o200 | (0o111 if path.is_dir() else 0) | 0o044)
        rootfs, report = work / "rootfs", work / "sklearn-version"
        q = shlex.quote
        # uv inside the chroot trusts the host's CA bundle (a TLS-inspecting proxy's CA may
        # be in it only), placed in /tmp, which is emptied before the layer is written.
        host_ca = Path(os.environ.get("SSL_CERT_FILE") or CA_BUNDLE)
        uv_env = (
            f"VIRTUAL_ENV={VENV} UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy UV_NO_CACHE=1 "
            "SSL_CERT_FILE=/tmp/host-ca.crt SSL_CERT_DIR="
        )
        hooks = [
            f'cp {q(str(uv))} "$1/tmp/uv"',
            f'cp {q(str(host_ca))} "$1/tmp/host-ca.crt"',
            f'cp -r {q(str(src))}/kserve {q(str(src))}/storage {q(str(src))}/sklearnserver "$1/"',
            f'chroot "$1" useradd kserve -m -u {KSERVE_UID} -d /home/kserve',
            f'chroot "$1" env {uv_env} /tmp/uv venv --python /usr/bin/python3 {VENV}',
            # upstream syncs kserve, then installs storage, then syncs sklearnserver; uv sync is
            # exact, so the last sync (sklearnserver's lock) decides the venv: run that one.
            f'chroot "$1" sh -c "cd /sklearnserver && {uv_env} /tmp/uv sync --active --frozen"',
            'rm -rf "$1/tmp/uv" "$1/tmp/host-ca.crt" "$1/root/.cache"',
            f'chown -R {KSERVE_UID}:{KSERVE_UID} "$1{VENV}"',
            f'chroot --userspec={KSERVE_UID}:{KSERVE_UID} "$1" env PYTHONPATH=/sklearnserver '
            f'HOME=/home/kserve {VENV}/bin/python -c "import sklearnserver, kserve, sklearn; '
            f'print(sklearn.__version__)" > {q(str(report))}',
            'rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/* "$1"/tmp/*',
        ]
        argv = [
            "mmdebstrap",
            "--quiet",
            "--mode=root",
            "--variant=minbase",
            "--format=directory",
            "--include=python3,ca-certificates,passwd",
            *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("man", "doc", "info", "locale")),
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            *(f"--customize-hook={hook}" for hook in hooks),
            suite,
            str(rootfs),
            mirror,
        ]
        _run(argv, f"{image.name} root file system (mmdebstrap {suite})")
        site = rootfs / VENV.strip("/") / "lib"
        sites = list(site.glob("python3*/site-packages"))
        have = _metadata_version(sites[0], "scikit_learn") if sites else None
        imported = report.read_text().strip() if report.is_file() else ""
        if have != want or imported != want:
            raise BuildError(
                f"{image.name}: the image's scikit-learn is {have or 'missing'} (imports as "
                f"{imported or 'nothing'}), kserve.sklearnServer.scikitLearn pins {want}: "
                f"sklearnserver/uv.lock of {controller_binaries.KSERVE}@{image.version} and the "
                "pin disagree"
            )
        # The build host's name and resolver: the runtime mounts the pod's own over them.
        for leftover in ("etc/hostname", "etc/resolv.conf"):
            (rootfs / leftover).unlink(missing_ok=True)
        writer = LayerWriter(
            work / "rootfs.tar.gz",
            f"mmdebstrap {suite} python3; uv sync --frozen of sklearnserver/uv.lock "
            f"({controller_binaries.KSERVE}@{image.version})",
        )
        writer.tree(rootfs, skip_contents=("dev", "proc", "sys", "run", "tmp"))
        layers = [writer.close()]
        config = image_config(
            layers,
            user=str(KSERVE_UID),
            entrypoint=SKLEARN_ENTRYPOINT,
            env=[
                f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
                f"VIRTUAL_ENV={VENV}",
                "PYTHONPATH=/sklearnserver",
            ],
            labels=_labels(
                f"{controller_binaries.KSERVE}@{image.version}/python/sklearn.Dockerfile",
                image.version,
                **{"dev.kserve-gitops.scikit-learn": want},
            ),
        )
        return write_archive(image.path, image.ref, config, layers)
    finally:
        _remove_build_dir(work)


def build_coredns(image: Image, repo: Repo) -> Path:
    """CoreDNS as its upstream image runs it: the static binary at /coredns, user 65532 (the
    cluster DNS of the real node, kserve_gitops.node.addons)."""
    from kserve_gitops.localcluster.binaries import build
    from kserve_gitops.node.binaries import pinned as node_pinned

    spec = next(b for b in node_pinned(repo) if b.name == "coredns")
    binary = build(spec, image.build)
    work = _workdir(image.name)
    try:
        base = static_base(work / "base.tar.gz")
        writer = LayerWriter(work / "app.tar.gz", f"{spec.package}@{image.version}")
        writer.add(entry("coredns", mode=0o555, size=binary.stat().st_size), binary.open("rb"))
        layers = [base, writer.close()]
        config = image_config(
            layers,
            user=str(NONROOT),
            entrypoint=["/coredns"],
            env=["PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            labels=_labels(f"{spec.package}@{image.version}", image.version),
        )
        return write_archive(image.path, image.ref, config, layers)
    finally:
        shutil.rmtree(work, ignore_errors=True)


BUILDERS: dict[str, Callable[[Image, Repo], Path]] = {
    "coredns": build_coredns,
    "pause": build_pause,
    "sklearnserver": build_sklearnserver,
    "knative": build_knative,
}


def _select(images: list[Image], names: Iterable[str] | None) -> list[Image]:
    if not names:
        return images
    wanted = set(names)
    unknown = wanted - {i.name for i in images}
    if unknown:
        known = ", ".join(i.name for i in images)
        raise BuildError(f"no image {', '.join(sorted(unknown))} (the images: {known})")
    return [i for i in images if i.name in wanted]


def ensure(
    repo: Repo,
    echo: Callable[[str], None] | None = None,
    names: Iterable[str] | None = None,
    builders: dict[str, Callable[[Image, Repo], Path]] | None = None,
) -> dict[str, Path]:
    """Every pinned image (or those `names`), built where its archive is missing; name ->
    archive. A progress line per image built; nothing is built when all are cached."""
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    builders = builders or BUILDERS
    todo = _select(pinned(repo), names)
    for number, image in enumerate(todo, start=1):
        if image.path.is_file():
            continue
        echo(f"[{number}/{len(todo)}] building {image.ref} ({image.build}) ...")
        started = time.monotonic()
        size = builders[image.kind](image, repo).stat().st_size / 2**20
        echo(f"    {image.name}: {time.monotonic() - started:.0f}s, {size:.0f} MiB")
    return {image.name: image.path for image in todo}


def locate(repo: Repo, names: Iterable[str] | None = None) -> dict[str, Path]:
    """The pinned images' archives, already built; BuildError naming what is missing."""
    todo = _select(pinned(repo), names)
    missing = [i for i in todo if not i.path.is_file()]
    if missing:
        what = ", ".join(i.ref for i in missing)
        raise BuildError(f"not built yet: {what}; `make images` builds them")
    return {image.name: image.path for image in todo}


def refs(repo: Repo) -> dict[str, str]:
    """name -> image reference (dev.local/kserve-gitops/<name>:<version>), what manifests and
    containerd's sandbox image setting name."""
    return {image.name: image.ref for image in pinned(repo)}


def archive_ref(path: Path) -> str:
    """The reference an archive's index names its image by (index.json only, no blob read)."""
    with tarfile.open(path) as tar:
        handle = tar.extractfile("index.json")
        if handle is None:
            raise BuildError(f"{path}: no index.json")
        manifests = json.load(handle).get("manifests") or [{}]
    ref = (manifests[0].get("annotations") or {}).get(CONTAINERD_NAME)
    if not ref:
        raise BuildError(f"{path}: index.json names no image ({CONTAINERD_NAME})")
    return str(ref)


def import_images(
    ctr: Path,
    address: Path,
    namespace: str = "k8s.io",
    archives: Iterable[Path] | None = None,
    repo: Repo | None = None,
    labels: dict[str, str] | None = None,
) -> list[str]:
    """Import every archive (default: every pinned image, built) into the containerd at
    `address`, in `namespace` (k8s.io: the CRI's), unpacked for its default snapshotter, with
    `labels` on each image (e.g. {"io.cri-containerd.pinned": "pinned"}, which the kubelet's
    image GC spares); the references imported, each checked in `ctr images list`. `ctr images
    import` (through the transfer service) names each image by the archive's
    io.containerd.image.name; --base-name refuses any other name."""
    paths = (
        list(archives) if archives is not None else list(locate(repo or Repo.discover()).values())
    )
    base = [str(ctr), "--address", str(address), "--namespace", namespace, "images"]
    label_args = [arg for k, v in (labels or {}).items() for arg in ("--label", f"{k}={v}")]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise BuildError(f"no archive {', '.join(missing)}; `make images` builds them")
    imported: list[str] = []
    for path in paths:
        ref = archive_ref(path)
        argv = [*base, "import", "--base-name", ref.rsplit(":", 1)[0], *label_args, str(path)]
        _run(argv, f"import {path}")
        imported.append(ref)
    listed = _run([*base, "list", "-q"], "list images").split()
    missing = [ref for ref in imported if ref not in listed]
    if missing:
        raise BuildError(f"containerd at {address} does not list {', '.join(missing)} after import")
    return imported


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    repo = repo or Repo.discover()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="show the cache, build nothing")
    parser.add_argument("--only", action="append", metavar="NAME", help="this image only (repeat)")
    parser.add_argument(
        "--import",
        dest="address",
        type=Path,
        metavar="SOCKET",
        help="then import them into the containerd listening on SOCKET",
    )
    parser.add_argument("--ctr", type=Path, help="the ctr binary of --import (default: on PATH)")
    parser.add_argument("--namespace", default="k8s.io", help="containerd namespace of --import")
    args = parser.parse_args(argv)
    try:
        images = _select(pinned(repo), args.only)
        if not args.list:
            started = time.monotonic()
            ensure(repo, names=args.only)
            print(f"images ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
        for image in images:
            state = "built" if image.path.is_file() else "missing"
            size = f"{image.path.stat().st_size / 2**20:.0f} MiB" if state == "built" else "-"
            print(f"{image.ref:<58} {state:<8} {size:>8}  {image.path}")
        if args.address:
            ctr = args.ctr or (Path(shutil.which("ctr") or "ctr"))
            archives = [i.path for i in images]
            for ref in import_images(ctr, args.address, args.namespace, archives):
                print(f"imported {ref}")
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
