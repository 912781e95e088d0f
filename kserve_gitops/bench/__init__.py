"""Benchmarks of this machine's serving and clusters, written to BENCHMARKS.md and benchmarks/."""
