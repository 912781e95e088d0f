"""The controllers that run in place of their kwok pods, built from Go modules at the versions
in versions.yaml and cached beside the control plane's binaries (kserve_gitops.localcluster.
bincache: same cache, same layout <name>/<version>/<go version>/<name>).

    kgops controllers          # build what is missing
    kgops controllers --list   # where each binary is

- Knative Serving's controller, webhook, autoscaler: `go install <module>/cmd/<cmd>@<version>`
  (no replace directives in its go.mod).
- built inside a writable copy of the downloaded module, as the main module (`go build
  ./cmd/<cmd>`): KServe's manager, whose go.mod carries replace and exclude directives (they only
  apply to a main module), and the Knative operator and its webhook, which require
  knative.dev/eventing v0.48.0, a version the checksum database does not know (404): as the main
  module, its go.sum verifies it. The operator applies the Serving manifests it ships in its
  module (cmd/operator/kodata), found through `go mod download -json`.
- not buildable, and why (reported by `unavailable()`): net-istio and Istio's istiod, whose
  modules the Go module proxy does not serve at the pinned versions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kserve_gitops.localcluster import binaries as kwok_binaries
from kserve_gitops.localcluster.binaries import BuildError, _go, outside_modules, pin_error
from kserve_gitops.localcluster.bincache import binary_path, cache_root
from kserve_gitops.localcluster.buildcommand import build_command
from kserve_gitops.repo import Repo

KNATIVE_OPERATOR = "knative.dev/operator"
KNATIVE_SERVING = "knative.dev/serving"
KSERVE = "github.com/kserve/kserve"


@dataclass(frozen=True)
class Controller:
    """One controller binary: `module`@`version`, command folder `cmd`; `main_module` builds a
    copy of the downloaded module as the main module (its replace directives and go.sum)."""

    name: str
    module: str
    version: str
    cmd: str
    main_module: bool = False

    def path(self, gover: str) -> Path:
        return binary_path(self.name, self.version, gover)

    @property
    def package(self) -> str:
        return f"{self.module}/{self.cmd}"


def _pin(repo: Repo, section: dict, key: str, where: str) -> str:
    value = section.get(key)
    if not value:
        raise pin_error(repo, f"{where}.{key}")
    return str(value)


def pinned(repo: Repo, versions: dict | None = None) -> list[Controller]:
    """The controllers at the versions of versions.yaml (the platform's pins; `versions` in its
    place)."""
    versions = versions or repo.versions
    local = versions.get("localCluster") or {}
    operator = _pin(repo, local, "knativeOperator", "localCluster")
    serving = _pin(repo, local, "knativeServing", "localCluster")
    kserve = _pin(repo, versions.get("kserve") or {}, "version", "kserve")
    return [
        Controller("knative-operator", KNATIVE_OPERATOR, operator, "cmd/operator", True),
        Controller("knative-operator-webhook", KNATIVE_OPERATOR, operator, "cmd/webhook", True),
        *(
            Controller(f"knative-serving-{cmd}", KNATIVE_SERVING, serving, f"cmd/{cmd}")
            for cmd in ("controller", "webhook", "autoscaler")
        ),
        Controller("kserve-manager", KSERVE, kserve, "cmd/manager", main_module=True),
    ]


def unavailable(repo: Repo) -> dict[str, str]:
    """Components of the chain that cannot be built here, with the reason (checked against the
    module proxy by `go mod download`, answered 403 'not available' on 2026-11-30)."""
    versions = repo.versions
    istio = (versions.get("istio") or {}).get("version")
    serving = (versions.get("localCluster") or {}).get("knativeServing")
    return {
        "net-istio-controller": (
            f"knative.dev/net-istio@{serving}: the Go module proxy does not serve this module "
            "(403 'not available'), so net-istio's controller (KIngress -> Istio "
            "VirtualServices) cannot be built"
        ),
        "istiod": (
            f"istio.io/istio@{istio}: Istio's release tags are not Go module versions (the proxy "
            f"answers 403 for the commit of the {istio} tag; only pseudo-versions of a few "
            "master commits are served), and without Envoy no data plane would follow its "
            "configuration"
        ),
    }


def module_dir(module: str, version: str, env: dict[str, str] | None = None) -> Path:
    """The read-only module folder `go mod download` fills (GOMODCACHE)."""
    env = env or dict(os.environ)
    argv = ["mod", "download", "-json", f"{module}@{version}"]
    info = json.loads(_go(argv, outside_modules(), env, module))
    if info.get("Error") or not info.get("Dir"):
        raise BuildError(f"{module}@{version}: {info.get('Error') or 'no module folder'}")
    return Path(info["Dir"])


def kodata(repo: Repo, version: str, serving: str) -> Path:
    """The operator's data folder (KO_DATA_PATH), which must ship the Serving release our
    KnativeServing asks for (spec.version = knative.serving of versions.yaml)."""
    folder = module_dir(KNATIVE_OPERATOR, version) / "cmd" / "operator" / "kodata"
    if not (folder / "knative-serving" / serving).is_dir():
        shipped = sorted(p.name for p in (folder / "knative-serving").glob("*"))
        raise pin_error(
            repo,
            "localCluster.knativeOperator",
            f"{version} ships no Knative Serving {serving} (knative.serving); it ships "
            f"{', '.join(shipped[-4:])}",
        )
    return folder


def _writable_copy(src: Path, name: str) -> Path:
    """A writable copy of a module folder (the module cache's files are read-only)."""
    dest = cache_root() / "_modules" / name
    if (dest / "go.mod").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest.parent))
    shutil.copytree(src, tmp, dirs_exist_ok=True)
    for path in [tmp, *tmp.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def build(ctl: Controller, gover: str) -> Path:
    """Build one controller into the cache (atomically)."""
    dest = ctl.path(gover)
    if dest.is_file():
        return dest
    env = kwok_binaries.build_env(dest)
    if ctl.main_module:
        copy = f"{ctl.module.rsplit('/', 1)[-1]}-{ctl.version}"
        src = _writable_copy(module_dir(ctl.module, ctl.version, env), copy)
        what = f"{ctl.name} {ctl.version}"
        return kwok_binaries.go_build(src, f"./{ctl.cmd}", "-s -w", dest, env, what)
    command = ctl.cmd.rsplit("/", 1)[-1]
    return kwok_binaries.go_install(ctl.package, ctl.version, "-s -w", command, dest, env)


def ensure(repo: Repo, echo: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Every pinned controller, built where missing (a progress line per binary)."""
    return kwok_binaries.ensure(pinned(repo), echo, build)


def locate(repo: Repo) -> dict[str, Path]:
    """The pinned controllers, already built; BuildError naming what is missing."""
    return kwok_binaries.locate(pinned(repo), "`kgops controllers` builds them")


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    repo = repo or Repo.discover()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="show the cache, build nothing")
    args = parser.parse_args(argv)
    return build_command(
        lambda: pinned(repo),
        build,
        args.list,
        "controllers",
        lambda: [f"{name:<26} {'-':<9} {'no':<8} {why}" for name, why in unavailable(repo).items()],
    )


if __name__ == "__main__":
    raise SystemExit(main())
