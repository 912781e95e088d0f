"""Locust users for the model: V1 and V2 predict at a fixed arrival rate (open loop).

Headless runs with an SLO verdict: `make loadtest` (kserve_gitops.load.headless drives this file, in
one process or as the master of Locust workers). Dashboard: `make loadtest-ui`, or
`locust -f loadtests/locustfile.py --host URL V1User` (add `--processes N`, or `--master` and
`--worker` processes, for distributed load): its SLO tab shows the targets of config/slo.yaml,
the latency from the scheduled send time and the verdict, live; the stop writes the report.
Environment: KGOPS_ROOT (the checkout), KGOPS_RATE (arrival rate, req/s, default 80),
KGOPS_REQUESTS (end the test after that many requests; default: run until stopped),
KGOPS_MODEL (default: the checkout's only model), KGOPS_HOST_HEADER (Host header for an ingress
gateway, default none), KGOPS_ENV and KGOPS_SLO_CONFIG (which SLO targets), KGOPS_REPORTS (report
root, default reports/).

Each user claims the next due slot of its process's plan (a worker's share of the run's plan),
sleeps until it, sends and checks the predictions (a wrong prediction is a failure). Locust's
stats keep the service time; the plan's recorder keeps the latency from the scheduled time,
which the SLO uses.
"""

from __future__ import annotations

import gevent
from kserve_gitops.load import locust_command, openloop
from locust import FastHttpUser, constant, events, task

import itertools

from kserve_gitops.serving import client, payloads


@events.init.add_listener
def _open_loop(environment, **_kwargs) -> None:
    # Under the locust command (dashboard, --headless, master or worker);
    # kserve_gitops.load.headless installs its own bounded run on the environments it creates.
    locust_command.install(environment)


class _PredictUser(FastHttpUser):
    abstract = True
    protocol = "v1"
    wait_time = constant(0)  # pacing comes from the plan, not from think time
    connection_timeout = 10.0
    network_timeout = 10.0

    def on_start(self) -> None:
        target = self.environment.kgops_target
        self.cases = itertools.cycle(
            payloads.load_cases(self.environment.kgops_repo, self.protocol)
        )
        self.path = client.predict_path(self.protocol, target.model)
        self.headers = {"Content-Type": "application/json"}
        if target.host_header:
            self.headers["Host"] = target.host_header
        self.headers.update(target.headers)

    @task
    def predict(self) -> None:
        plan: openloop.Plan | None = getattr(self.environment, "kgops_plan", None)
        due = plan.claim() if plan is not None else None
        if due is None:  # plan over (or a worker that joined mid-run): idle until stopped
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
