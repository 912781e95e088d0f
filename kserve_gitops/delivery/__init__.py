"""Delivery of this repository by GitOps controllers (Flux) to a local cluster."""
