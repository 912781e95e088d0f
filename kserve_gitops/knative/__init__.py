"""What Knative Serving makes of an InferenceService: which pod fields its webhook admits under
an environment's feature flags (admission.py), and the revision pod KServe and Knative build
(revision.py), so security and QoS rules judge the pod that really runs."""
