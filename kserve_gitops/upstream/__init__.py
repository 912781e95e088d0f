"""Upstream software the platform installs: its Helm charts at the pinned versions (charts.py)
and the checks of the values files this repository passes to them (values.py)."""
