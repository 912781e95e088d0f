"""The request bodies in loadtests/payloads/ and the check of a prediction response against them.

Files are named <protocol>-<case>.json (ready for `curl -d @file`); expected.json maps each case
to the predictions the reference model must return.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kserve_gitops import paths

PAYLOADS = paths.ROOT / "loadtests" / "payloads"
PROTOCOLS = ("v1", "v2")


@dataclass(frozen=True)
class Case:
    name: str
    protocol: str
    body: bytes
    expected: list[Any]


def load_cases(protocol: str, directory: Path = PAYLOADS) -> list[Case]:
    """Every case of `protocol`, sorted by name; ValueError naming the file if one is unusable."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    expected_file = directory / "expected.json"
    expected = json.loads(expected_file.read_text())
    cases = []
    for file in sorted(directory.glob(f"{protocol}-*.json")):
        name = file.stem.removeprefix(f"{protocol}-")
        if name not in expected:
            raise ValueError(f"{paths.rel(expected_file)}: no expected predictions for {name!r}")
        body = file.read_bytes()
        json.loads(body)  # fail here, not as a server-side 400 during the run
        cases.append(Case(name, protocol, body, expected[name]))
    if not cases:
        raise ValueError(f"{paths.rel(directory)}: no {protocol}-*.json request bodies")
    return cases


def predict_path(protocol: str, model: str) -> str:
    return f"/v1/models/{model}:predict" if protocol == "v1" else f"/v2/models/{model}/infer"


def predictions(protocol: str, doc: dict[str, Any]) -> list[Any]:
    """The predictions of a V1 (`predictions`) or V2 (first output's `data`) response."""
    if protocol == "v1":
        return doc["predictions"]
    return doc["outputs"][0]["data"]


def check_response(case: Case, status: int, text: str) -> str | None:
    """None when the response carries the expected predictions, else what went wrong."""
    if status != 200:
        return f"HTTP {status}: {text[:200]}"
    try:
        got = predictions(case.protocol, json.loads(text))
    except (ValueError, KeyError, IndexError, TypeError):
        return f"unexpected response body: {text[:200]}"
    if got != case.expected:
        return f"wrong prediction for {case.name}: got {got}, expected {case.expected}"
    return None
