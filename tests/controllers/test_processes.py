"""The controllers a process stands in for (kserve_gitops.controllers.processes)."""

from __future__ import annotations

from kserve_gitops.controllers import binaries, processes
from tests import REPO


def test_roles_cover_every_pinned_controller_once() -> None:
    assert sorted(r.binary for r in processes.ROLES) == sorted(
        c.name for c in binaries.pinned(REPO)
    )
