"""Argo CD's own health verdicts without Argo CD: its Lua health checks (resource_customizations
of argoproj/argo-cd at the version versions.yaml pins) run in Lua 5.1 as Argo CD runs them, next
to our customization in argocd/base/argocd-cm.yaml. A low layer: uses only base and repo."""
