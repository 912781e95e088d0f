"""The controllers of the chain KnativeServing -> InferenceService -> Knative Service ->
Revision -> Deployment, built from source and run as processes against the kwok cluster."""
