"""SLO targets from config/slo.yaml (yamale-validated, per-environment overrides) and verdicts."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yamale
import yaml
from tabulate import tabulate

from kserve_gitops.repo import Repo

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class SloConfigError(ValueError):
    """The SLO config file is unreadable or does not match its schema."""


def parse_duration(value: str | float) -> float:
    """Seconds from 30, '30s', '2m', '500ms' or '1h'."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).strip())
        if not match:
            raise ValueError(f"duration {value!r}: expected a number with ms, s, m or h (e.g. 30s)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration {value!r}: must be positive")
    return seconds


@dataclass(frozen=True)
class LoadSettings:
    rate: float
    duration: float  # seconds
    protocol: str
    users: int | None = None  # None: sized from the rate


@dataclass(frozen=True)
class Targets:
    latency_avg_ms: float
    latency_max_ms: float
    throughput_min_rps: float
    error_ratio_max: float
    latency_p99_ms: float | None = None


@dataclass(frozen=True)
class Objectives:
    """Service level objectives of the running service, which the alert rules are generated from
    (kserve_gitops/monitoring/alerts.py); the load test has no use for them."""

    availability: float  # fraction of requests answered without a 5xx over the SLO window


@dataclass(frozen=True)
class Slo:
    env: str | None
    load: LoadSettings
    targets: Targets
    source: str  # the config file, as users see it
    objectives: Objectives | None = None  # None: the config declares none


def config_file(repo: Repo) -> Path:
    return repo.config / "slo.yaml"


def load_validated(repo: Repo, config: Path, schema_name: str) -> dict[str, Any]:
    """`config` checked against repo.schemas/<schema_name>; ValueError naming the file. The
    SLO and the canary rules are read this way."""
    where = repo.rel(config)
    try:
        data = yamale.make_data(str(config))
        yamale.validate(yamale.make_schema(str(repo.schemas / schema_name)), data)
    except FileNotFoundError:
        raise ValueError(f"{where}: file not found") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{where}: not valid YAML: {exc}") from None
    except yamale.YamaleError as exc:
        raise ValueError(
            f"{where}: " + "; ".join(e for r in exc.results for e in r.errors)
        ) from None
    return data[0][0]


def load_slo(repo: Repo, env: str | None = None, config: Path | None = None) -> Slo:
    """The defaults of `config` (default config/slo.yaml) with the overrides of `env` applied;
    SloConfigError if invalid."""
    config = config or config_file(repo)
    where = repo.rel(config)
    try:
        doc = load_validated(repo, config, "slo.yaml")
    except ValueError as exc:
        raise SloConfigError(str(exc)) from None
    if env is not None and env not in repo.environment_names:
        raise SloConfigError(
            f"{where}: unknown environment {env!r} (expected one of "
            f"{', '.join(repo.environment_names)})"
        )
    override = (doc.get("environments") or {}).get(env) or {} if env else {}
    load = {**doc["defaults"]["load"], **(override.get("load") or {})}
    targets = {**doc["defaults"]["targets"], **(override.get("targets") or {})}
    objectives = {**(doc["defaults"].get("objectives") or {}), **(override.get("objectives") or {})}
    load["duration"] = parse_duration(load["duration"])
    load["rate"] = float(load["rate"])
    return Slo(
        env=env,
        load=LoadSettings(**load),
        targets=Targets(**targets),
        source=where,
        objectives=Objectives(**objectives) if objectives else None,
    )


@dataclass(frozen=True)
class Measured:
    """What a run measured; latencies from the scheduled send time, in milliseconds."""

    latency_avg_ms: float
    latency_max_ms: float
    latency_p99_ms: float
    throughput_rps: float
    error_ratio: float


@dataclass(frozen=True)
class Check:
    target: str
    threshold: str
    measured: str
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def evaluate(targets: Targets, measured: Measured) -> list[Check]:
    """One check per configured target."""
    checks = [
        Check(
            "latency avg",
            f"<= {targets.latency_avg_ms:g} ms",
            f"{measured.latency_avg_ms:.2f} ms",
            measured.latency_avg_ms <= targets.latency_avg_ms,
        ),
        Check(
            "latency max",
            f"<= {targets.latency_max_ms:g} ms",
            f"{measured.latency_max_ms:.2f} ms",
            measured.latency_max_ms <= targets.latency_max_ms,
        ),
    ]
    if targets.latency_p99_ms is not None:
        checks.append(
            Check(
                "latency p99",
                f"<= {targets.latency_p99_ms:g} ms",
                f"{measured.latency_p99_ms:.2f} ms",
                measured.latency_p99_ms <= targets.latency_p99_ms,
            )
        )
    checks += [
        Check(
            "throughput",
            f">= {targets.throughput_min_rps:g} req/s",
            f"{measured.throughput_rps:.2f} req/s",
            measured.throughput_rps >= targets.throughput_min_rps,
        ),
        Check(
            "error ratio",
            f"<= {targets.error_ratio_max:g}",
            f"{measured.error_ratio:.4f}",
            measured.error_ratio <= targets.error_ratio_max,
        ),
    ]
    return checks


def verdict_table(checks: list[Check]) -> str:
    """A compact fixed-width table: target | threshold | measured | PASS/FAIL."""
    head = ("target", "threshold", "measured", "result")
    rows = [(c.target, c.threshold, c.measured, "PASS" if c.passed else "FAIL") for c in checks]
    # The cells are formatted already: numparse would reformat "0.0100" as 0.01.
    return tabulate(rows, head, tablefmt="presto", disable_numparse=True)


def with_overrides(slo: Slo, **load: Any) -> Slo:
    """The SLO with command-line load settings (None means keep the config value)."""
    changes = {k: v for k, v in load.items() if v is not None}
    return replace(slo, load=replace(slo.load, **changes))


def for_run(
    repo: Repo,
    env: str | None,
    config: Path | None,
    rate: float | None,
    duration: str | None,
    **load: Any,
) -> Slo:
    """The SLO of `env` with a run's command-line load settings; SloConfigError names the bad
    setting, so every command that runs load reports config and flag mistakes alike."""
    slo = load_slo(repo, env, config=config)
    if rate is not None and rate <= 0:
        raise SloConfigError("--rate: expected a positive number of requests/s")
    try:
        seconds = parse_duration(duration) if duration else None
    except ValueError as exc:
        raise SloConfigError(f"--duration: {exc}") from None
    return with_overrides(slo, rate=rate, duration=seconds, **load)
