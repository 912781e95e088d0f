"""Whether a controller process really serves an admission webhook's path, so that only the
webhooks it answers are handed back from the stand-ins to it (processes.py) and the API server
never calls a path that would fail.
"""

from __future__ import annotations

import http.client
import json
import ssl

from kserve_gitops.controllers.network import Netns

# An AdmissionReview every admission handler can answer: CONNECT of a ConfigMap, which no
# handler acts on. Its answer proves a handler is registered at the path.
PROBE_REVIEW = json.dumps(
    {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-0000-0000-000000000000",
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "operation": "CONNECT",
            "namespace": "kgops-probe",
            "name": "kgops-probe",
            "userInfo": {"username": "kgops-probe"},
        },
    }
).encode()


def answers(netns: Netns, port: int, path: str) -> bool:
    """Whether the webhook server at `port` serves `path`: a registered handler answers an
    AdmissionReview; an unknown path gets 404 (controller-runtime) or "no controller registered
    for" (knative.dev/pkg)."""
    try:
        sock = ssl._create_unverified_context().wrap_socket(netns.dial(port)())
    except OSError:
        return False
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.sock = sock
    try:
        conn.request(
            "POST", path or "/", body=PROBE_REVIEW, headers={"Content-Type": "application/json"}
        )
        resp = conn.getresponse()
        return resp.status == 200 and b'"AdmissionReview"' in resp.read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
