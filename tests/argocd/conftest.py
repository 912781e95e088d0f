"""The pinned Argo CD health checks for these tests: ARGOCD_HEALTH_DIR as .ci/run sets it, else
../shared/argocd-health beside the checkout; filled into the user's cache like `make crds`."""

from __future__ import annotations

import os

from tests import REPO

_shared = REPO.root.parent / "shared" / "argocd-health"
if "ARGOCD_HEALTH_DIR" not in os.environ and _shared.is_dir():
    os.environ["ARGOCD_HEALTH_DIR"] = str(_shared)
