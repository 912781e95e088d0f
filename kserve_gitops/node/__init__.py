"""The real node of the local cluster: kubelet, kube-proxy, containerd, runc, CNI."""
