"""Quality gate: may `version` replace what `env` serves as stable?

    kgops gate --model sklearn-iris --version v2 --env prod

Passes when the candidate's artifact is the registered one (sha256), its held-out accuracy is
at least the stable version's minus the registry's gate.accuracy_tolerance, and it predicts
every row of the golden set (gate.golden, rows + expected labels) right. Exit 0 pass, 1 fail
(each reason printed), 2 bad request (unknown model, version or environment).
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kserve_gitops.lifecycle import registry, train
from kserve_gitops.repo import Repo

FEATURES = ("sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm")


@dataclass
class GateResult:
    model: str
    version: str
    env: str
    baseline: str
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (name, passed, detail)

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    @property
    def reasons(self) -> list[str]:
        return [f"{name}: {detail}" for name, ok, detail in self.checks if not ok]

    def report(self) -> str:
        head = f"gate {self.model} {self.version} for {self.env} (stable: {self.baseline})"
        lines = [head] + [
            f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}" for name, ok, detail in self.checks
        ]
        lines.append("PASS" if self.passed else "FAIL: " + "; ".join(self.reasons))
        return "\n".join(lines)


def load_golden(repo: Repo, path: Path) -> tuple[list[list[float]], list[int]]:
    """Rows and expected labels; errors name the file, the line and the column."""
    where = repo.rel(path)
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != (*FEATURES, "label"):
                raise registry.RegistryError(
                    f"{where}: header {reader.fieldnames}, expected {[*FEATURES, 'label']}"
                )
            rows, labels = [], []
            for line, rec in enumerate(reader, start=2):
                try:
                    rows.append([float(rec[f]) for f in FEATURES])
                    labels.append(int(rec["label"]))
                except (TypeError, ValueError):
                    raise registry.RegistryError(
                        f"{where}:{line}: expected 4 numbers and an integer label, got {rec}"
                    ) from None
    except OSError as exc:
        raise registry.RegistryError(f"{where}: cannot read the golden set: {exc}") from None
    if not rows:
        raise registry.RegistryError(f"{where}: the golden set has no rows")
    return rows, labels


def evaluate(repo: Repo, model: str, version: str, env: str) -> GateResult:
    """The gate's checks; RegistryError for a request that names nothing known."""
    import joblib

    reg = registry.load(repo, model)
    candidate = reg.version(version)
    baseline = reg.version(registry.state(reg, env).stable)
    result = GateResult(model, version, env, baseline.name)

    if not candidate.artifact.is_file():
        result.checks.append(("artifact", False, f"{repo.rel(candidate.artifact)} is missing"))
        return result
    digest = train.sha256_file(candidate.artifact)
    result.checks.append(
        (
            "artifact",
            digest == candidate.sha256,
            f"sha256 {digest[:12]}"
            + ("" if digest == candidate.sha256 else f", registered {candidate.sha256[:12]}"),
        )
    )
    if digest != candidate.sha256:
        return result  # never unpickle an artifact that is not the registered one

    floor = baseline.accuracy - reg.tolerance
    result.checks.append(
        (
            "accuracy",
            candidate.accuracy >= floor - 1e-9,
            f"{candidate.accuracy:.4f} on {candidate.test_rows} held-out rows, needs >= "
            f"{floor:.4f} ({baseline.name} {baseline.accuracy:.4f} - tolerance {reg.tolerance:g})",
        )
    )
    rows, labels = load_golden(repo, reg.golden)
    predicted = joblib.load(candidate.artifact).predict(rows).tolist()
    wrong = [
        f"line {i + 2} {rows[i]} -> {got}, want {want}"
        for i, (got, want) in enumerate(zip(predicted, labels, strict=True))
        if got != want
    ]
    result.checks.append(
        (
            "golden set",
            not wrong,
            f"{len(rows) - len(wrong)}/{len(rows)} rows of {repo.rel(reg.golden)} right"
            + (f"; wrong: {', '.join(wrong[:5])}" if wrong else ""),
        )
    )
    return result


def main(argv: list[str] | None = None, repo: Repo | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kgops gate", description=__doc__)
    parser.add_argument("--model", help="(default: the checkout's only model)")
    parser.add_argument("--version", required=True, help="candidate version, e.g. v2")
    parser.add_argument("--env", required=True, help="environment whose stable version it faces")
    args = parser.parse_args(argv)
    repo = repo or Repo.discover()
    try:
        result = evaluate(repo, args.model or repo.default_model(), args.version, args.env)
    except registry.RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.report())
    return 0 if result.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
