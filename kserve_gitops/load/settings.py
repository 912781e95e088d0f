"""The settings of a run under the locust command, from the environment (KGOPS_*): a module of
their own so that the dashboard (load.dashboard) reads them without importing the command."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kserve_gitops.repo import Repo, slo


@dataclass(frozen=True)
class Settings:
    repo: Repo
    rate: float
    requests: int | None  # planned requests; None: until Locust stops the test
    model: str
    host_header: str | None
    env: str | None
    slo_config: Path | None
    reports: Path

    @classmethod
    def from_environ(cls) -> Settings:
        raw = os.environ.get("KGOPS_RATE", "80")
        try:
            rate = float(raw)
        except ValueError:
            rate = 0.0
        if not rate > 0:
            raise SystemExit(f"error: KGOPS_RATE={raw!r}: expected a positive number of requests/s")
        raw_requests = os.environ.get("KGOPS_REQUESTS") or None
        requests = None
        if raw_requests is not None:
            requests = int(raw_requests) if raw_requests.isdigit() else 0
            if requests < 1:
                raise SystemExit(
                    f"error: KGOPS_REQUESTS={raw_requests!r}: expected a positive whole number"
                )
        config = os.environ.get("KGOPS_SLO_CONFIG")
        repo = Repo.discover()
        return cls(
            repo=repo,
            rate=rate,
            requests=requests,
            model=os.environ.get("KGOPS_MODEL") or repo.default_model(),
            host_header=os.environ.get("KGOPS_HOST_HEADER") or None,
            env=os.environ.get("KGOPS_ENV") or None,
            slo_config=Path(config) if config else None,
            reports=Path(os.environ.get("KGOPS_REPORTS") or repo.reports),
        )

    def slo(self) -> slo.Slo:
        try:
            return slo.load_slo(self.repo, self.env, config=self.slo_config)
        except slo.SloConfigError as exc:
            raise SystemExit(f"error: {exc}") from None
