"""Locust users for the sklearn-iris model: V1 and V2 predict at a fixed arrival rate (open loop).

Headless runs with an SLO verdict: `make loadtest` (kserve_gitops.loadtest drives this file).
Dashboard: `make loadtest-ui`, or `locust -f loadtests/locustfile.py --host URL V1User` (plain
Locust: service-time stats only, plus a scheduled-time latency line when the test stops).
Environment: KGOPS_RATE (arrival rate, req/s, default 80), KGOPS_MODEL (default sklearn-iris),
KGOPS_HOST_HEADER (Host header for an ingress gateway, default none).

Each user claims the next due slot of the shared plan, sleeps until it, sends and checks the
predictions (a wrong prediction is a failure). Locust's stats keep the service time; the plan's
recorder keeps the latency from the scheduled time, which the SLO uses.
"""

from __future__ import annotations

import itertools
import os

import gevent
from locust import FastHttpUser, constant, events, task

from kserve_gitops import client, openloop, payloads

MODEL = os.environ.get("KGOPS_MODEL", "sklearn-iris")
HOST_HEADER = os.environ.get("KGOPS_HOST_HEADER") or None


@events.test_start.add_listener
def _plan_per_start(environment, **_kwargs) -> None:
    # kserve_gitops.loadtest attaches its own bounded plan; under the locust command (dashboard
    # or --headless) every start gets an unbounded plan that runs until Locust stops it.
    if not getattr(environment, "kgops_managed", False):
        rate = float(os.environ.get("KGOPS_RATE", "80"))
        environment.kgops_plan = openloop.Plan(rate=rate, total=None, lead_s=0.5)


@events.test_stop.add_listener
def _report_unmanaged_run(environment, **_kwargs) -> None:
    plan = getattr(environment, "kgops_plan", None)
    if not getattr(environment, "kgops_managed", False) and plan is not None:
        plan.stop()
        rec = plan.recorder
        lat = openloop.summarize(rec.scheduled, rec.scheduled_sum_us, rec.requests)
        print(
            f"latency from scheduled send time: avg {lat['avg']:.2f} ms, p99 {lat['p99']:.2f} ms, "
            f"max {lat['max']:.2f} ms over {rec.requests} requests, {rec.failures} failed"
        )


class _PredictUser(FastHttpUser):
    abstract = True
    protocol = "v1"
    wait_time = constant(0)  # pacing comes from the plan, not from think time
    connection_timeout = 10.0
    network_timeout = 10.0

    def on_start(self) -> None:
        self.cases = itertools.cycle(payloads.load_cases(self.protocol))
        self.path = client.predict_path(self.protocol, MODEL)
        self.headers = {"Content-Type": "application/json"}
        if HOST_HEADER:
            self.headers["Host"] = HOST_HEADER

    @task
    def predict(self) -> None:
        plan: openloop.Plan = self.environment.kgops_plan
        due = plan.claim()
        if due is None:  # plan over: idle until the runner stops us
            gevent.sleep(1)
            return
        case = next(self.cases)
        sent = plan.wait_until(due)
        with self.client.post(
            self.path,
            data=case.body,
            headers=self.headers,
            name=f"{self.protocol} {case.name}",
            catch_response=True,
        ) as response:
            end = plan.now()
            text = response.text or (repr(response.error) if response.error else "")
            error = payloads.check_response(case, response.status_code, text)
            if error:
                response.failure(error)
            else:
                response.success()
        plan.record(due, sent, end, ok=error is None)


class V1User(_PredictUser):
    protocol = "v1"


class V2User(_PredictUser):
    protocol = "v2"
