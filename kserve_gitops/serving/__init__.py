"""Model server runtimes other than KServe's own, run locally as the cluster runs them."""
