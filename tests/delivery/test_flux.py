"""Flux's controllers' offline parts (kserve_gitops.delivery.flux): the ports of the clusters,
local servers and controllers, and the pinned Flux distribution they are built from."""

from __future__ import annotations

import socket

import pytest

from kserve_gitops.delivery import flux
from kserve_gitops.localcluster import binaries, controlplane
from kserve_gitops.localcluster.controlplane import PORTS
from kserve_gitops.upstream import crds
from tests import REPO


def test_ports_stay_in_range_and_do_not_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each cluster's own ports, as allocated when nothing else holds them."""
    monkeypatch.setattr(flux, "port_in_use", lambda port: False)
    used: list[int] = []
    for name in (*(f"flux-{e}" for e in REPO.environment_names), "flux-behaviour"):
        p = flux.Ports.allocate(REPO, name)
        used += [p.git, p.charts, p.registry, p.storage, *p.health.values()]
        # The control plane adds 10 * its slot of the name to the base.
        first = flux.cluster_port_base(REPO, name) + 10 * controlplane.slot(REPO, name)
        used += [first + offset for offset in PORTS.values()]
    assert len(used) == len(set(used))
    assert all(flux.CLUSTER_PORTS <= port < flux.CLUSTER_PORTS + 500 for port in used)


def test_ports_in_use_are_skipped() -> None:
    with socket.socket() as sock:
        first = flux.Ports.allocate(REPO, "flux-behaviour")
        # A port an earlier test's server left in TIME_WAIT is free to listen on again.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", first.git))
        sock.listen()
        again = flux.Ports.allocate(REPO, "flux-behaviour")
    assert first.git not in (again.git, again.charts, again.registry, again.storage)
    assert first.git not in again.health.values()


def test_cluster_ports_move_past_a_port_in_use() -> None:
    base = flux.cluster_port_base(REPO, "flux-behaviour")
    first = base + 10 * controlplane.slot(REPO, "flux-behaviour")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", first + PORTS["kube-apiserver"]))
        sock.listen()
        moved = flux.cluster_port_base(REPO, "flux-behaviour") + 10 * controlplane.slot(
            REPO, "flux-behaviour"
        )
    taken = first + PORTS["kube-apiserver"]
    assert taken not in [moved + offset for offset in PORTS.values()]
    assert moved >= flux.CLUSTER_PORTS
    assert moved + max(PORTS.values()) < flux.SERVER_PORTS


def test_flux_pins_are_one_distribution_and_match_the_crd_pins() -> None:
    versions = REPO.versions
    pinned = {b.name: b.version for b in binaries.flux_pinned(REPO, versions)}
    assert set(pinned) == set(binaries.FLUX_CONTROLLERS)
    tags = {
        p.upstream.split("/")[1]: p.tag for p in crds.pins(REPO) if p.upstream.startswith("fluxcd/")
    }
    assert tags == {c: pinned[c] for c in tags}, "config/crds.tsv pins other Flux versions"


def test_flux_pins_missing_version_is_named() -> None:
    versions = REPO.versions
    broken = {
        **versions,
        "flux": {k: v for k, v in versions["flux"].items() if k != "helmController"},
    }
    with pytest.raises(
        binaries.BuildError, match=r"versions.yaml: flux.helmController: no version"
    ):
        binaries.flux_pinned(REPO, broken)
