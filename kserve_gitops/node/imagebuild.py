"""How each image of the real node is built from its pinned source, so that every image is one
a runtime could have pulled, made here instead:

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
  must be kserve.sklearnServer.scikitLearn. Its files keep their own mtimes: apt and uv make
  that root file system differ from run to run anyway.
- knative-serving-{queue,activator,autoscaler,controller,webhook}: knative.dev/serving at
  localCluster.knativeServing, static Go binaries built by kserve_gitops.controllers.binaries
  (shared with its cache), laid out the way ko lays them out: /ko-app/<cmd>, KO_DATA_PATH
  /var/run/ko, numeric user 65532, a minimal /etc/passwd and /etc/group and the CA bundle.
- coredns: the static binary of kserve_gitops.node.binaries at /coredns, user 65532.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kserve_gitops.controllers import binaries as controller_binaries
from kserve_gitops.localcluster.binaries import BuildError
from kserve_gitops.node.imagepins import Image, _pin, cache_root
from kserve_gitops.node.oci import Layer, LayerWriter, _walk, entry, image_config, write_archive
from kserve_gitops.repo import Repo

KUBERNETES = "k8s.io/kubernetes"
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
