"""Upstream software the platform installs: its Helm charts at the pinned versions (charts.py),
the checks of the values files this repository passes to them (values.py), and the schemas of
the Kubernetes version and CRDs it pins (kube_schemas.py)."""
