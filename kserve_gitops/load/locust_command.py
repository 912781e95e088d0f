"""The open-loop run under the locust command (dashboard, --headless, master or worker).

Settings come from the environment (load.settings; `make loadtest-ui` sets them): the plan runs
until Locust stops the test, or with KGOPS_REQUESTS=N until N requests are done (then a
headless run quits, a run with the web UI stops the test). With the web UI the dashboard
gets its SLO view (load.dashboard); without it, the stop prints the latency from the
scheduled send time.
"""

from __future__ import annotations

import gevent
from kserve_gitops.load import coordinator
from kserve_gitops.load.settings import Settings
from locust.env import Environment
from locust.runners import MasterRunner


def install(environment: Environment) -> None:
    settings = Settings.from_environ()
    environment.kgops_repo = settings.repo
    environment.kgops_target = coordinator.RequestTarget(settings.model, settings.host_header)

    def spec() -> coordinator.RunSpec:
        # Users spawn at once; workers also need the plan message first.
        lead = 1.5 if isinstance(environment.runner, MasterRunner) else 0.5
        return coordinator.RunSpec(
            settings.rate, settings.requests, lead, settings.model, settings.host_header
        )

    run = coordinator.install(environment, spec)
    if run is None:  # a worker: the master reports
        return
    if settings.requests is not None:
        environment.events.test_start.add_listener(lambda **_kw: gevent.spawn(_end_when_done, run))
    if environment.web_ui is not None:
        from kserve_gitops.load import dashboard  # Flask and the report code: only with the UI

        dashboard.install(environment, run, settings, settings.slo())
    else:
        environment.events.test_stopping.add_listener(lambda **_kw: _print_latency(run))


def _end_when_done(run: coordinator.Coordinator) -> None:
    """A bounded plan: once every planned request is done, end the test as Locust's --run-time
    would (headless: quit; with the web UI: stop, the dashboard keeps the results)."""
    run.done.wait()
    runner = run.environment.runner
    if runner is None:
        return
    if run.environment.web_ui is None:
        runner.quit()
    else:
        runner.stop()


def _print_latency(run: coordinator.Coordinator) -> None:
    if run.spec is None:  # stopped before any test started
        return
    totals = run.totals(final=True)
    lat = totals.latency()
    print(
        f"latency from scheduled send time: avg {lat['avg']:.2f} ms, p99 {lat['p99']:.2f} ms, "
        f"max {lat['max']:.2f} ms over {totals.recorder.requests} requests, "
        f"{totals.errors} errors",
        flush=True,
    )
