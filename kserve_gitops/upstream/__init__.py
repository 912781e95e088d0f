"""Upstream software the platform installs: its Helm charts at the pinned versions (charts.py)."""
