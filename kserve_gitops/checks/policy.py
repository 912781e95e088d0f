"""Security policies over every object an environment applies (and every chart scenario), plus
the credential scan of the work tree (gitleaks, config/gitleaks.toml).

    kgops policy               # every environment, the chart scenarios, the repo
    kgops policy --env prod    # one environment (and the repo scan)

The rules are data (RULES): each has an id, what it requires, the kinds it applies to and a check
that yields (field, problem) pairs. Object rules see one object; environment rules see all objects
of an environment (mTLS, who may call the predictors, default deny). The checks live by concern:
pods.py, credentials.py, mesh.py, revisions.py, storage.py. Exit 1 on any violation.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from tabulate import tabulate

from kserve_gitops.checks import credentials, mesh, pods, revisions, secret_scan, storage
from kserve_gitops.checks.pods import POD_KINDS
from kserve_gitops.checks.rules import Context, Problems, Violation, values_file
from kserve_gitops.localcluster import binaries
from kserve_gitops.repo import Repo, render
from kserve_gitops.repo.render import Obj, RenderError


@dataclass(frozen=True)
class Rule:
    id: str
    description: str
    kinds: frozenset[str]  # object kinds it applies to; empty: an environment rule
    check: Callable[..., Problems]


RULES: tuple[Rule, ...] = (
    Rule("PSS-NONROOT", "containers run as non-root", POD_KINDS, pods.check_run_as_non_root),
    Rule(
        "PSS-PRIV-ESC",
        "no privilege escalation, not privileged",
        POD_KINDS,
        pods.check_no_privilege_escalation,
    ),
    Rule(
        "PSS-CAPS",
        "capabilities: drop ALL, add at most NET_BIND_SERVICE",
        POD_KINDS,
        pods.check_capabilities,
    ),
    Rule(
        "PSS-SECCOMP",
        "seccomp profile RuntimeDefault (or Localhost)",
        POD_KINDS,
        pods.check_seccomp,
    ),
    Rule(
        "PSS-HOST",
        "no host network/PID/IPC, no hostPath volumes",
        POD_KINDS,
        pods.check_host_access,
    ),
    Rule("RO-ROOTFS", "read-only root filesystem", POD_KINDS, pods.check_read_only_root),
    Rule(
        "RESOURCES",
        "cpu and memory requests and limits on every container",
        POD_KINDS,
        pods.check_resources,
    ),
    Rule(
        "IMAGE-PINNED",
        "images carry a version tag or digest, never latest",
        POD_KINDS,
        pods.check_image_pinned,
    ),
    Rule(
        "CREDS-BY-REF",
        "credential env vars come from a Secret, never a literal",
        POD_KINDS,
        credentials.check_credentials_by_reference,
    ),
    Rule(
        "SECRET-LITERAL",
        "no credential committed in a Secret object",
        frozenset({"Secret"}),
        credentials.check_secret_objects,
    ),
    Rule(
        "NS-RESTRICTED",
        "model namespaces enforce Pod Security restricted",
        frozenset({"Namespace"}),
        pods.check_model_namespace_restricted,
    ),
    Rule(
        "NS-DECLARED", "the model namespace is declared", frozenset(), pods.check_namespace_declared
    ),
    Rule(
        "MTLS-STRICT",
        "namespace-wide Istio mTLS STRICT in model namespaces",
        frozenset(),
        mesh.check_mtls_strict,
    ),
    Rule(
        "AUTHZ-CALLERS",
        "only the gateway, activator, autoscaler and Prometheus may call",
        frozenset(),
        mesh.check_authorization,
    ),
    Rule(
        "NETPOL",
        "default-deny ingress; every allow names sources and ports",
        frozenset(),
        mesh.check_network_policies,
    ),
    Rule(
        "MESH-ENFORCED",
        "mTLS and authorization policies sit where a proxy enforces them "
        "(ambient ztunnel: L4 only; or sidecars), their callers in the mesh",
        frozenset(),
        mesh.check_mesh_enforced,
    ),
    Rule(
        "KNATIVE-FEATURES",
        "Knative admits the predictors' pod fields (spec.config.features); "
        "no pod-spec feature enabled that no model uses",
        frozenset(),
        revisions.check_knative_features,
    ),
    Rule(
        "REVISION-PSS",
        "the revision pod (model, queue-proxy, storage-initializer) meets Pod Security restricted",
        frozenset(),
        revisions.check_revision_pod_security,
    ),
    Rule(
        "STORAGE-PROVIDED",
        "every storageUri names storage the environment declares (claim, credentials, modelcar)",
        frozenset(),
        storage.check_storage_provided,
    ),
    Rule(
        "QOS-GUARANTEED",
        "a model with requests == limits gets the Guaranteed QoS class for its whole revision pod",
        frozenset(),
        revisions.check_qos,
    ),
)


def check_objects(objs: list[Obj], ctx: Context, environment: bool) -> list[Violation]:
    """Every object rule on every object; the environment rules too when `environment`."""
    out: list[Violation] = []
    for rule in RULES:
        if rule.kinds:
            for obj in objs:
                if obj.kind in rule.kinds:
                    where = f"{obj.source}: {obj.ref}"
                    out += [Violation(rule.id, where, f, m) for f, m in rule.check(obj.body, ctx)]
        elif environment:
            where = values_file(objs[0]) if objs else "?"
            out += [Violation(rule.id, where, f, m) for f, m in rule.check(objs, ctx)]
    return out


def context(repo: Repo, env: str) -> Context:
    namespace = str(render.environment(repo, env).get("namespace", "models"))
    return Context(repo, frozenset({namespace}), frozenset({namespace, "kserve-monitoring"}), env)


def check_environment(repo: Repo, env: str) -> list[Violation]:
    objs = render.environment_objects(repo, env)
    return check_objects(objs, context(repo, env), environment=True)


def check_chart_scenarios(repo: Repo) -> list[Violation]:
    """Each chart scenario as rendered: object rules only (a scenario is not an environment)."""
    out: list[Violation] = []
    ctx = Context(repo, frozenset(), frozenset())
    chart = repo.model_chart
    for scenario in sorted((chart / "ci").glob("*-values.yaml")):
        values = render.model_values(repo, scenario)
        source = repo.rel(scenario)
        objs = render.render_chart(repo, chart, values, chart.name, "default", source)
        out += check_objects(objs, ctx, environment=False)
    return out


def problems(repo: Repo, envs: list[str]) -> list[str]:
    """Every violation as a message, for `make validate`; what fails to render is left to the
    checks that already report it there."""
    found: list[Violation] = []
    checks: list[Callable[[], list[Violation]]] = [
        *(lambda env=env: check_environment(repo, env) for env in envs),
        lambda: check_chart_scenarios(repo),
    ]
    for check in checks:
        try:
            found += check()
        except RenderError:
            continue
    try:
        found += credentials.scan_repository(repo)
    except RenderError as exc:  # the scanner could not run: that is a problem too
        return [*(str(v) for v in found), f"credential scan: {exc}"]
    return [str(v) for v in found]


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", action="append", help="environment (default: all)")
    parser.add_argument("--rules", action="store_true", help="list the rules and exit")
    args = parser.parse_args(argv)
    repo = repo or Repo.discover()
    if args.rules:
        rows = [
            (rule.id, f"{rule.description} ({', '.join(sorted(rule.kinds)) or 'environment'})")
            for rule in RULES
        ]
        scanner = binaries.secret_scanner(repo)
        rows.append(
            (
                "gitleaks:*",
                f"every file of the work tree: gitleaks {scanner.version}, its default rules"
                f" and {secret_scan.CONFIG} (rules, allowlist with reasons)",
            )
        )
        print(tabulate(rows, tablefmt="plain"))
        return 0
    envs = args.env or list(repo.environment_names)
    found: list[Violation] = []
    try:
        for env in envs:
            found += check_environment(repo, env)
        if not args.env:
            found += check_chart_scenarios(repo)
        found += credentials.scan_repository(repo)
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for v in found:
        print(v, file=sys.stderr)
    scope = ", ".join(envs) + ("" if args.env else " + chart scenarios")
    print(f"{len(found)} policy violation(s) in {scope} and the repository scan")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
