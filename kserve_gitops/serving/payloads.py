"""The request bodies in loadtests/payloads/ and the check of a prediction response against them.

Files are named <protocol>-<case>.json (ready for `curl -d @file`); expected.json maps each case
to the predictions the reference model must return.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kserve_gitops.repo import Repo
from kserve_gitops.serving import client

PROTOCOLS = client.PROTOCOLS


def directory(repo: Repo) -> Path:
    return repo.loadtests / "payloads"


@dataclass(frozen=True)
class Case:
    name: str
    protocol: str
    body: bytes
    expected: list[Any]


def load_cases(repo: Repo, protocol: str) -> list[Case]:
    """Every case of `protocol`, sorted by name; ValueError naming the file if one is unusable."""
    folder = directory(repo)
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    expected_file = folder / "expected.json"
    expected = json.loads(expected_file.read_text())
    cases = []
    for file in sorted(folder.glob(f"{protocol}-*.json")):
        name = file.stem.removeprefix(f"{protocol}-")
        if name not in expected:
            raise ValueError(f"{repo.rel(expected_file)}: no expected predictions for {name!r}")
        body = file.read_bytes()
        json.loads(body)  # fail here, not as a server-side 400 during the run
        cases.append(Case(name, protocol, body, expected[name]))
    if not cases:
        raise ValueError(f"{repo.rel(folder)}: no {protocol}-*.json request bodies")
    return cases


def check_response(case: Case, status: int, text: str) -> str | None:
    """None when the response carries the expected predictions, else what went wrong."""
    if status != 200:
        return f"HTTP {status}: {text[:200]}"
    try:
        got = client.parse_predictions(case.protocol, json.loads(text), len(case.expected))
    except (ValueError, client.PredictionError) as exc:
        return f"unexpected response body: {exc}"
    if got != case.expected:
        return f"wrong prediction for {case.name}: got {got}, expected {case.expected}"
    return None
