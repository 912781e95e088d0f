"""The real node of the local cluster: kubelet, containerd, runc, CNI, and the images it runs."""
