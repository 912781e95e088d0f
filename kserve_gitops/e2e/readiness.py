"""Readiness of each upstream chart: what `helm --wait` does not prove. Taken from KServe's own
CI (hack/setup/quick-install/*, test/scripts/gh-actions/setup-deps.sh) and kubeflow/manifests'
kind tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kserve_gitops.e2e.steps import Poll, Run, Step
from kserve_gitops.repo.render import RenderError


@dataclass(frozen=True)
class Readiness:
    timeout_s: int
    crds: tuple[str, ...] = ()  # CRDs the chart creates and later layers use: wait Established
    services: tuple[str, ...] = ()  # webhook/ingress Services that must have a ready endpoint
    needs_crds: tuple[str, ...] = ()  # CRDs whose objects the chart itself creates
    deployments: bool = True  # the chart runs Deployments in its namespace
    daemonsets: tuple[str, ...] = ()  # DaemonSets that must be ready on every node


CERT_MANAGER_CRDS = ("certificates.cert-manager.io", "issuers.cert-manager.io")
ISTIO_CRDS = (
    "gateways.networking.istio.io",
    "virtualservices.networking.istio.io",
    "destinationrules.networking.istio.io",
    "peerauthentications.security.istio.io",
    "authorizationpolicies.security.istio.io",
)
KNATIVE_OPERATOR_CRDS = ("knativeservings.operator.knative.dev",)
KSERVE_CRDS = (
    "inferenceservices.serving.kserve.io",
    "servingruntimes.serving.kserve.io",
    "clusterservingruntimes.serving.kserve.io",
    "inferencegraphs.serving.kserve.io",
)
KSERVE_WEBHOOK = "kserve-webhook-server-service"
KSERVE_CERTIFICATE = "serving-cert"  # cert-manager Certificate of the KServe webhook
# Webhook configurations whose caBundle cert-manager's cainjector fills from that Certificate.
KSERVE_WEBHOOK_CONFIGS = (
    ("validatingwebhookconfiguration", "clusterservingruntime.serving.kserve.io"),
    ("validatingwebhookconfiguration", "inferenceservice.serving.kserve.io"),
    ("mutatingwebhookconfiguration", "inferenceservice.serving.kserve.io"),
)
SKLEARN_RUNTIME = "kserve-sklearnserver"


def readiness(chart: str, release: str) -> Readiness:
    """What tells a release of `chart` is ready, by chart (service names follow release names
    the way each chart's templates derive them)."""
    match chart:
        case "cert-manager":
            return Readiness(180, CERT_MANAGER_CRDS, (f"{_cm_fullname(release)}-webhook",))
        case "base":
            return Readiness(60, ISTIO_CRDS, deployments=False)
        case "istiod":
            return Readiness(600, services=("istiod",), needs_crds=ISTIO_CRDS)
        case "gateway":
            return Readiness(600, services=(release,))
        case "cni":
            # Istio CNI's node agent (the chart's DaemonSet name is fixed in its templates).
            return Readiness(300, deployments=False, daemonsets=("istio-cni-node",))
        case "ztunnel":
            return Readiness(300, deployments=False, daemonsets=("ztunnel",))
        case "knative-operator":
            return Readiness(300, KNATIVE_OPERATOR_CRDS, ("operator-webhook",))
        case "kserve-crd":
            return Readiness(60, KSERVE_CRDS, deployments=False)
        case "kserve-resources":
            return Readiness(300, services=(KSERVE_WEBHOOK,), needs_crds=CERT_MANAGER_CRDS)
        case "kserve-runtime-configs":
            return Readiness(
                60, needs_crds=("clusterservingruntimes.serving.kserve.io",), deployments=False
            )
    raise RenderError(f"e2e: no readiness rule for chart {chart!r} (release {release})")


def _cm_fullname(release: str) -> str:
    # cert-manager's _helpers.tpl: the release name when it contains the chart name.
    return release if "cert-manager" in release else f"{release}-cert-manager"


def wait_crds(layer: str, crds: Sequence[str], timeout_s: int = 60) -> Run:
    return Run(
        layer,
        f"wait: CRDs Established ({', '.join(crds)})",
        (
            "kubectl",
            "wait",
            "--for=condition=Established",
            f"--timeout={timeout_s}s",
            *(f"crd/{c}" for c in crds),
        ),
        timeout_s + 30,
    )


def wait_deployments(layer: str, namespace: str, timeout_s: int) -> Run:
    return Run(
        layer,
        f"wait: every Deployment in {namespace} Available",
        (
            "kubectl",
            "wait",
            "--for=condition=Available",
            "deployment",
            "--all",
            "-n",
            namespace,
            f"--timeout={timeout_s}s",
        ),
        timeout_s + 30,
    )


def wait_endpoint(layer: str, namespace: str, service: str, timeout_s: int) -> Poll:
    """A Service answers only once an EndpointSlice lists a ready address behind it: the
    moment a webhook can be called (Deployment Available can precede it)."""
    return Poll(
        layer,
        f"wait: Service {namespace}/{service} has a ready endpoint",
        (
            "kubectl",
            "get",
            "endpointslices",
            "-n",
            namespace,
            "-l",
            f"kubernetes.io/service-name={service}",
            "-o",
            "json",
        ),
        "ready-endpoint",
        timeout_s,
    )


def kserve_webhook_tls(layer: str, namespace: str) -> list[Step]:
    """A webhook whose caBundle is still empty fails every call with a TLS error: wait for the
    serving certificate (as kubeflow/manifests' kserve install does) and for its injection."""
    steps: list[Step] = [
        Run(
            layer,
            f"wait: Certificate {namespace}/{KSERVE_CERTIFICATE} Ready",
            (
                "kubectl",
                "wait",
                "--for=condition=Ready",
                f"certificate/{KSERVE_CERTIFICATE}",
                "-n",
                namespace,
                "--timeout=120s",
            ),
            150,
        )
    ]
    for kind, name in KSERVE_WEBHOOK_CONFIGS:
        steps.append(
            Poll(
                layer,
                f"wait: cert-manager injected the CA into {kind} {name}",
                (
                    "kubectl",
                    "get",
                    kind,
                    name,
                    "-o",
                    "jsonpath={.webhooks[*].clientConfig.caBundle}",
                ),
                "output",
                120,
            )
        )
    return steps
