"""What the harness does in place of components that cannot run on the kwok provider, each
labelled on the objects it touches and listed in the run's summary:

- webhook servers: kwok pods run nothing, so a webhook with failurePolicy Fail would block every
  write it covers. Each such webhook gets failurePolicy Ignore (annotation
  kgops.dev/stand-in on its configuration), unless its server is one of `served`.
- cert-manager's controller (not buildable from the module proxy: its commands are nested
  modules without tags): each Certificate gets its Secret from the harness's CA and Ready=True,
  and the CA bundle goes wherever `cert-manager.io/inject-ca-from` asks for it.
- a volume provisioner: each PersistentVolumeClaim gets a PersistentVolume made for it (claimRef
  set), which the real kube-controller-manager then binds.
"""

from __future__ import annotations

import base64
import ipaddress
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from kserve_gitops.localcluster import pki

STAND_IN = "kgops.dev/stand-in"
INJECT_CA_FROM = "cert-manager.io/inject-ca-from"
CERT_GROUP, CERT_VERSION = "cert-manager.io", "v1"


@dataclass
class StandIns:
    """A loop (in a thread) over the cluster that does the three jobs above every `interval`
    seconds; `actions` records what it did, once per object."""

    kubeconfig: Path
    ca: pki.CA
    served: frozenset[str] = frozenset()  # "<kind>/<config>/<webhook>" whose server runs
    interval: float = 1.0
    echo: Callable[[str], None] = print
    # Where volumes really live when a real node mounts them (kserve_gitops.node): a folder per
    # claim, writable by any pod user, as kind's local-path provisioner makes them.
    volume_root: Path | None = None
    # The real node's pod range: a webhook whose Service has a ready endpoint there is served
    # by a real pod, and gets its declared failurePolicy back.
    real_pods: str | None = None
    actions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        api = config.new_client_from_config(config_file=str(self.kubeconfig))
        self.core = client.CoreV1Api(api)
        self.admission = client.AdmissionregistrationV1Api(api)
        self.ext = client.ApiextensionsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.discovery = client.DiscoveryV1Api(api)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the loop and the executor (after each apply) both call
        self._thread: threading.Thread | None = None
        self._done: set[str] = set()
        self.ignored: list[str] = []

    def _record(self, key: str, text: str) -> None:
        if key not in self._done:
            self._done.add(key)
            self.actions.append(text)
            self.echo(f"    stand-in: {text}")

    # -- webhooks ----------------------------------------------------------------------------------

    def _webhook_apis(self) -> list[tuple[str, Callable[[], Any], Callable[..., Any]]]:
        a = self.admission
        return [
            (
                "ValidatingWebhookConfiguration",
                a.list_validating_webhook_configuration,
                a.patch_validating_webhook_configuration,
            ),
            (
                "MutatingWebhookConfiguration",
                a.list_mutating_webhook_configuration,
                a.patch_mutating_webhook_configuration,
            ),
        ]

    def webhooks(self) -> None:
        for kind, lister, patcher in self._webhook_apis():
            for cfg in lister().items:
                patch: list[dict[str, Any]] = []
                names = []
                for i, hook in enumerate(cfg.webhooks or []):
                    key = f"{kind}/{cfg.metadata.name}/{hook.name}"
                    if key in self.served or (hook.failure_policy or "Fail") == "Ignore":
                        continue
                    patch.append(
                        {
                            "op": "replace" if hook.failure_policy else "add",
                            "path": f"/webhooks/{i}/failurePolicy",
                            "value": "Ignore",
                        }
                    )
                    names.append(hook.name)
                    if key not in self.ignored:
                        self.ignored.append(key)
                if not patch:
                    continue
                patch.append(
                    {
                        "op": "add",
                        "path": "/metadata/annotations",
                        "value": {
                            **(cfg.metadata.annotations or {}),
                            STAND_IN: "failurePolicy Ignore: no webhook server on kwok",
                        },
                    }
                )
                patcher(cfg.metadata.name, patch)
                for name in names:
                    self._record(
                        f"ignore {kind}/{cfg.metadata.name}/{name}",
                        f"{kind} {cfg.metadata.name}: webhook {name} failurePolicy Fail -> "
                        "Ignore (no server runs it on kwok)",
                    )

    def serve(self, keys: list[str]) -> None:
        """Webhooks whose server now runs (kserve_gitops.controllers): left alone from now on,
        and those set to Ignore get back Fail, the only value `webhooks` replaces."""
        with self._lock:
            self._serve(keys)

    def _serve(self, keys: list[str]) -> None:
        self.served = self.served | frozenset(keys)
        for key in [k for k in self.ignored if k in self.served]:
            kind, name, hook = key.split("/", 2)
            reader, patcher = (
                (
                    self.admission.read_validating_webhook_configuration,
                    self.admission.patch_validating_webhook_configuration,
                )
                if kind == "ValidatingWebhookConfiguration"
                else (
                    self.admission.read_mutating_webhook_configuration,
                    self.admission.patch_mutating_webhook_configuration,
                )
            )
            self.ignored.remove(key)
            try:
                cfg = reader(name)
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            index = [h.name for h in cfg.webhooks or []].index(hook)
            patcher(
                name,
                [{"op": "replace", "path": f"/webhooks/{index}/failurePolicy", "value": "Fail"}],
            )
            self._record(
                f"serve {key}",
                f"{kind} {name}: webhook {hook} failurePolicy Ignore -> Fail (its server runs)",
            )

    # -- cert-manager -----------------------------------------------------------------------------

    def certificates(self) -> None:
        try:
            certs = self.custom.list_cluster_custom_object(CERT_GROUP, CERT_VERSION, "certificates")
        except ApiException as exc:
            if exc.status == 404:  # cert-manager's CRDs are not installed yet
                return
            raise
        for cert in certs.get("items") or []:
            meta, spec = cert["metadata"], cert.get("spec") or {}
            ns, name = meta["namespace"], meta["name"]
            secret_name = spec.get("secretName")
            if not secret_name:
                continue
            self._ensure_secret(ns, name, secret_name, spec)
            conditions = (cert.get("status") or {}).get("conditions") or []
            if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                self._mark_ready(ns, name)

    def _ensure_secret(self, ns: str, cert: str, secret_name: str, spec: dict[str, Any]) -> None:
        try:
            existing = self.core.read_namespaced_secret(secret_name, ns)
            if (existing.metadata.annotations or {}).get(STAND_IN):
                return
            if existing.data and existing.data.get("tls.crt"):
                return  # issued by something else: leave it
        except ApiException as exc:
            if exc.status != 404:
                raise
            existing = None
        dns = tuple(spec.get("dnsNames") or ())
        ips = tuple(spec.get("ipAddresses") or ())
        crt, key = self.ca.issue(spec.get("commonName") or (dns[0] if dns else cert), dns, ips)
        b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=secret_name,
                namespace=ns,
                annotations={
                    "cert-manager.io/certificate-name": cert,
                    STAND_IN: "issued by the harness CA in place of cert-manager",
                },
            ),
            type="kubernetes.io/tls",
            data={"tls.crt": b64(crt), "tls.key": b64(key), "ca.crt": b64(self.ca.cert_pem)},
        )
        if existing is None:
            self.core.create_namespaced_secret(ns, body)
        else:
            self.core.replace_namespaced_secret(secret_name, ns, body)
        self._record(
            f"secret {ns}/{secret_name}",
            f"cert-manager: Certificate {ns}/{cert} -> Secret {secret_name} from the harness CA",
        )

    def _mark_ready(self, ns: str, name: str) -> None:
        status = {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Issued",
                        "message": "issued by the kgops harness (stand-in for cert-manager)",
                        "lastTransitionTime": _now(),
                    }
                ]
            }
        }
        self.custom.patch_namespaced_custom_object_status(
            CERT_GROUP, CERT_VERSION, ns, "certificates", name, status
        )

    def inject_ca(self) -> None:
        bundle = base64.b64encode(self.ca.cert_pem).decode()
        for kind, lister, patcher in self._webhook_apis():
            for cfg in lister().items:
                source = (cfg.metadata.annotations or {}).get(INJECT_CA_FROM)
                if not source or not self._issued(source):
                    continue
                patch = [
                    {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
                    for i, hook in enumerate(cfg.webhooks or [])
                    if hook.client_config.ca_bundle != bundle
                ]
                if patch:
                    patcher(cfg.metadata.name, patch)
                    self._record(
                        f"inject {kind}/{cfg.metadata.name}",
                        f"cert-manager cainjector: CA of {source} -> {kind} {cfg.metadata.name}",
                    )
        for crd in self.ext.list_custom_resource_definition().items:
            source = (crd.metadata.annotations or {}).get(INJECT_CA_FROM)
            conversion = crd.spec.conversion
            if not source or not conversion or not conversion.webhook or not self._issued(source):
                continue
            if conversion.webhook.client_config.ca_bundle == bundle:
                continue
            self.ext.patch_custom_resource_definition(
                crd.metadata.name,
                {"spec": {"conversion": {"webhook": {"clientConfig": {"caBundle": bundle}}}}},
            )
            self._record(
                f"inject crd/{crd.metadata.name}",
                f"cert-manager cainjector: CA of {source} -> CRD {crd.metadata.name} conversion",
            )

    def _issued(self, source: str) -> bool:
        ns, _, name = source.partition("/")
        try:
            cert = self.custom.get_namespaced_custom_object(
                CERT_GROUP, CERT_VERSION, ns, "certificates", name
            )
        except ApiException:
            return False
        secret = (cert.get("spec") or {}).get("secretName")
        return bool(secret) and f"secret {ns}/{secret}" in self._done

    # -- volumes ----------------------------------------------------------------------------------

    def volumes(self) -> None:
        for pvc in self.core.list_persistent_volume_claim_for_all_namespaces().items:
            if pvc.status.phase != "Pending" or pvc.spec.volume_name:
                continue
            ns, name = pvc.metadata.namespace, pvc.metadata.name
            pv_name = f"kgops-{ns}-{name}"[:253]
            size = (pvc.spec.resources.requests or {}).get("storage", "1Gi")
            path = Path(f"/kgops-kwok/{ns}/{name}")
            if self.volume_root is not None:
                path = self.volume_root / f"{ns}-{name}"
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(0o777)
            body = client.V1PersistentVolume(
                metadata=client.V1ObjectMeta(
                    name=pv_name,
                    annotations={STAND_IN: "made for one claim in place of a provisioner"},
                ),
                spec=client.V1PersistentVolumeSpec(
                    capacity={"storage": size},
                    access_modes=pvc.spec.access_modes,
                    storage_class_name=pvc.spec.storage_class_name or "",
                    volume_mode=pvc.spec.volume_mode,
                    persistent_volume_reclaim_policy="Delete",
                    host_path=client.V1HostPathVolumeSource(path=str(path)),
                    claim_ref=client.V1ObjectReference(
                        kind="PersistentVolumeClaim", namespace=ns, name=name, uid=pvc.metadata.uid
                    ),
                ),
            )
            try:
                self.core.create_persistent_volume(body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
            self._record(
                f"pv {pv_name}",
                f"volume: PersistentVolume {pv_name} ({size}, "
                f"{','.join(pvc.spec.access_modes or [])}) for claim {ns}/{name}",
            )

    # -- the loop ---------------------------------------------------------------------------------

    def reconcile(self) -> None:
        with self._lock:
            self._reconcile()

    def served_by_real_pods(self) -> None:
        """Webhooks set to Ignore whose Service now has a ready endpoint on the real node."""
        if not self.real_pods or not self.ignored:
            return
        net = ipaddress.ip_network(self.real_pods)
        keys = []
        for kind, lister, _ in self._webhook_apis():
            for cfg in lister().items:
                for hook in cfg.webhooks or []:
                    key = f"{kind}/{cfg.metadata.name}/{hook.name}"
                    svc = hook.client_config.service
                    if key not in self.ignored or svc is None:
                        continue
                    slices = self.discovery.list_namespaced_endpoint_slice(
                        svc.namespace, label_selector=f"kubernetes.io/service-name={svc.name}"
                    ).items
                    if any(
                        (ep.conditions is None or ep.conditions.ready)
                        and any(ipaddress.ip_address(a) in net for a in ep.addresses)
                        for sl in slices
                        for ep in sl.endpoints or []
                    ):
                        keys.append(key)
        if keys:
            self._serve(keys)

    def _reconcile(self) -> None:
        jobs = (
            self.webhooks,
            self.certificates,
            self.inject_ca,
            self.volumes,
            self.served_by_real_pods,
        )
        for job in jobs:
            try:
                job()
            except ApiException as exc:
                msg = f"{job.__name__}: HTTP {exc.status} {exc.reason}: {(exc.body or '')[:300]}"
                if msg not in self.errors:
                    self.errors.append(msg)
                    self.echo(f"    stand-in error: {msg}")

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                self.reconcile()
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=loop, name="kgops-stand-ins", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
