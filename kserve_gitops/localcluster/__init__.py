"""The local cluster: a real Kubernetes control plane built from the pinned source, with kwok
standing in for the kubelet (`make e2e CLUSTER=kwok`)."""
