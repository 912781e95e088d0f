"""The e2e: the platform and the models an environment declares, installed on a throwaway
cluster (kind, or kwok without Docker), verified, and torn down. One concern in three mirrored
places: this package (the code), e2e/ at the top of the checkout (its data: kind-config.yaml,
kwok/cluster.yaml, values/<release>.yaml on top of the declared values, model-store/ (the loader
pod), predictions/<model>.yaml), and tests/e2e/ (its tests; tests/e2e/cluster/ runs inside a
cluster the e2e kept).

    steps        the step types and the Plan (an ordered tuple of steps, against one checkout)
    readiness    per upstream chart, the waits that tell a release is ready for the next layer
    model_store  the trained model onto the environment's claim, through the loader pod
    plan         build(repo, env, provider): every step, from the checkout's declarations
    describe     the plan as text (`kgops e2e --plan`)
    executor     runs the steps (Executor); ingress: predictions through a fresh route
    diagnostics  what a failed run leaves in reports/e2e-<timestamp>/diagnostics/
    run          `kgops e2e`: preflight, build, run, summary
    provider     the kwok cluster as the executor uses it: control plane, controllers, nodes
    delivery     `DELIVERY=flux`: the same cluster, delivered by Flux from clusters/<env>

The external tools (docker, kind, kubectl, helm), their preflight and the Runner are
kserve_gitops.base.tools: the kwok cluster, the controllers and delivery run them too.

What the kwok provider assembles: the control plane (kserve_gitops.localcluster), the
controllers it runs as processes (kserve_gitops.controllers) and the real node
(kserve_gitops.node); Flux's controllers and sources: kserve_gitops.delivery."""
