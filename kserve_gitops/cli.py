"""`kgops <command> [args]`: the one command line of the harness. Each command is a module's
`main(argv, repo)`, imported only when it runs (some pull in the Helm SDK or KServe's server), so
`kgops --help` answers at once. The checkout is KGOPS_ROOT, else the one this package came from;
tests pass a `Repo` of their own."""

from __future__ import annotations

import importlib
import sys

from kserve_gitops.repo import Repo, RepoError

# command -> (module under kserve_gitops, what it does); the order of `kgops --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("lifecycle.train", "train the models (deterministic), write artifacts and metadata"),
    "validate": ("checks.validate", "render and validate every chart scenario and environment"),
    "render": ("repo.render", "print an environment's manifests, or diff two environments"),
    "diff": ("review.revision", "rendered difference per environment between revisions"),
    "policy": ("checks.policy", "security policies and the credential scan"),
    "secret-scan": ("checks.secret_scan", "gitleaks over folders (default: the work tree)"),
    "platform": ("checks.platform_consistency", "what Flux and Argo CD install, and --check them"),
    "crds": ("upstream.crds", "fill the CRD cache (CRD_DIR or the pinned URLs)"),
    "charts": ("upstream.charts", "fill the upstream chart cache (CHART_DIR or the repos)"),
    "istio-values": ("upstream.istio_values", "regenerate Istio's typed values schema (Go)"),
    "binaries": ("localcluster.buildcommand", "build the kwok cluster's binaries from Go modules"),
    "controllers": ("controllers.binaries", "build the controllers that run on kwok"),
    "node-binaries": ("node.binaries", "build the real node's binaries from Go modules"),
    "images": ("node.images", "build the real node's container images from the pinned sources"),
    "serve": ("serving.server", "serve a model locally with KServe's ModelServer"),
    "serve-mlserver": ("serving.mlserver", "serve a model locally with MLServer (V2 protocol)"),
    "predict": ("serving.predict", "batch predictions from a CSV against a server"),
    "loadtest": ("load.loadtest", "open-loop Locust load test with an SLO verdict"),
    "demo": ("demo", "train if needed, validate, serve, load-test, SLO verdict"),
    "bench": ("bench.local", "benchmarks into BENCHMARKS.md"),
    "bench-e2e": ("bench.kwok_e2e", "warm kwok e2e per environment into benchmarks/"),
    "bench-cluster": ("bench.cluster", "benchmark the cluster paths on its own real-node e2e"),
    "profile": ("bench.profile", "where a runtime's Python time goes under load (py-spy)"),
    # After the Locust commands: `kgops <command> --help` of every command in one process
    # (tests/test_cli.py) must import Locust before the Kubernetes client.
    "e2e": ("e2e.run", "the platform and model on a kind or kwok cluster, or the plan"),
    "cluster": (
        "e2e.provider",
        "stop a cluster kept with KEEP=1 (and its real node)",
    ),
    "gate": ("lifecycle.gate", "quality gate of a model version for an environment"),
    "rollout": ("lifecycle.rollout", "canary, promote or roll back in an environment's values"),
    "canary-analysis": ("load.canary_analysis", "load-test stable and canary, decide"),
    "registry": ("lifecycle.registry", "model versions and what each environment serves"),
    "alerts": ("monitoring.alerts", "regenerate the SLO alert rules from config/slo.yaml"),
    "dashboard": ("monitoring.grafana", "regenerate the Grafana dashboards from config/slo.yaml"),
    "chart-version": ("checks.chart_version", "fail when a changed chart keeps its version"),
    "argocd-health": ("argocd.live", "Argo CD's health verdicts of live objects next to ours"),
}


def usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: kgops <command> [args]   (kgops <command> --help for its options)", ""]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        sys.stderr.write(f"kgops: unknown command {command!r}\n\n{usage()}")
        return 2
    module = importlib.import_module(f"kserve_gitops.{COMMANDS[command][0]}")
    sys.argv = [f"kgops {command}", *rest]  # argparse names the command in its messages
    try:
        return int(module.main(rest, repo or Repo.discover()) or 0)
    except RepoError as exc:
        sys.stderr.write(f"kgops {command}: {exc}\n")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
