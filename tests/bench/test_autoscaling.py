"""What the benchmark states an environment declares for autoscaling (bench.autoscaling), read
from the environments' manifests as the policy checks render them."""

from __future__ import annotations

import dataclasses

import pytest

from kserve_gitops.bench import autoscaling
from kserve_gitops.repo.render import RenderError
from tests import REPO


def test_dev_declares_its_own_target_and_takes_knatives_defaults_for_the_rest() -> None:
    a = autoscaling.read(REPO, "dev", "sklearn-iris")
    assert (a.container_concurrency, a.target, a.target_source) == (
        0,
        10.0,
        "the predictor's scaleTarget",
    )
    assert a.target_burst_capacity == 211  # dev leaves it to Knative's default
    assert (a.stable_window_s, a.panic_window_s, a.panic_threshold_pct) == (60.0, 6.0, 200.0)
    assert (a.min_replicas, a.max_replicas) == (0, 1)
    assert (a.model_cpu_request_m, a.pod_cpu_request_m) == (100.0, 125.0)  # + queue-proxy 25m


def test_prod_declares_burst_capacity_concurrency_and_queue_proxy_cpu() -> None:
    a = autoscaling.read(REPO, "prod", "sklearn-iris")
    assert (a.container_concurrency, a.target_burst_capacity) == (20, 200.0)
    assert a.max_scale_up_rate == 10.0
    assert a.pod_cpu_request_m == 1250.0  # 1 CPU model + 250m queue-proxy (config-deployment)
    assert a.pods_by_cpu(2) == 1


def test_revision_annotations_override_the_config_and_cc_caps_the_target() -> None:
    config = autoscaling._autoscaler(
        {"spec": {"config": {"autoscaler": {"stable-window": "30s"}}}},
        {"autoscaling.knative.dev/target-burst-capacity": "-1"},
    )
    assert config["stable-window"] == "30s" and config["target-burst-capacity"] == "-1"
    assert autoscaling._target("concurrency", {"scaleTarget": 50}, 8, config) == (
        8.0,
        "containerConcurrency (caps the target)",
    )
    assert autoscaling._target("concurrency", {}, 0, config)[0] == 100.0


def test_the_words_say_which_bound_comes_first() -> None:
    dev = autoscaling.read(REPO, "dev", "sklearn-iris")
    assert "maxReplicas 1 bounds the scale-out before the machine" in " ".join(
        autoscaling.describe(dev, 2)
    )
    prod = autoscaling.read(REPO, "prod", "sklearn-iris")
    text = " ".join(autoscaling.describe(prod, 2))
    assert "the machine bounds the scale-out before maxReplicas (10)" in text
    assert "at most 1 fit by requests" in text


def test_a_model_the_environment_does_not_serve_is_an_error() -> None:
    with pytest.raises(RenderError, match="no Knative-mode InferenceService nosuch"):
        autoscaling.read(REPO, "dev", "nosuch")


def test_each_environment_refuses_the_parts_its_replicas_leave_nothing_to_measure_in() -> None:
    dev = autoscaling.read(REPO, "dev", "sklearn-iris")
    assert dev.values_file == "environments/dev/models/sklearn-iris.yaml"
    assert list(dev.refusals()) == ["scaleout"]  # minReplicas 0: cold starts; maxReplicas 1
    assert dev.refusals()["scaleout"].startswith(
        "environments/dev/models/sklearn-iris.yaml maxReplicas 1: the ramp starts with 1 pod(s)"
    )
    staging = autoscaling.read(REPO, "staging", "sklearn-iris")
    assert (staging.min_replicas, staging.max_replicas, staging.model_cpu_request_m) == (1, 4, 250)
    assert list(staging.refusals()) == ["cold"]
    assert staging.refusals()["cold"].startswith(
        "environments/staging/models/sklearn-iris.yaml minReplicas 1: the revision never scales"
    )
    # No maxReplicas is no bound: a scale-out to measure.
    unbounded = dataclasses.replace(staging, min_replicas=0, max_replicas=0)
    assert unbounded.refusals() == {}
