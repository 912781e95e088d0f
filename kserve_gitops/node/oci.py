"""The OCI image archive of one image (blobs/sha256/<digest>, index.json and oci-layout in one
tar), written and read back here rather than by umoci: a few dozen lines of tarfile, json and
hashlib give archives that are the same bytes for the same inputs (entries sorted, mtimes and
owners fixed, gzip without a timestamp), need no root and no extra package, and tests can read
them back. A layer from a folder keeps its files' own mtimes: the sklearnserver image's Python
checks its .pyc files against them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from kserve_gitops.localcluster.binaries import BuildError

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


def arch() -> str:
    """The OCI architecture of this machine (amd64, arm64)."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


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
