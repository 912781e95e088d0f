"""py-spy's collapsed stacks grouped by the library of their innermost Python frame: the
pure part of `kserve_gitops.bench.profile`, free of its Locust import."""

from __future__ import annotations

import re
from collections import Counter

# (group, pattern on the innermost frame's file path); the first match wins.
GROUPS = (
    ("model: scikit-learn, numpy, scipy, pandas", r"/(sklearn|numpy|scipy|pandas|joblib)/"),
    ("logging", r"/logging/"),
    ("JSON and validation: orjson, json, pydantic", r"/(orjson|json|pydantic|pydantic_core)/"),
    ("HTTP: uvicorn, h11, httptools", r"/(uvicorn|h11|httptools)/"),
    ("web framework: fastapi, starlette", r"/(fastapi|starlette|starlette_exporter)/"),
    ("metrics: prometheus_client", r"/prometheus_client/"),
    ("runtime: kserve", r"/kserve/"),
    ("runtime: mlserver", r"/(mlserver|mlserver_sklearn)/"),
    ("this repository's model class and guard", r"/kserve_gitops/"),
    (
        "event loop, threads, multiprocessing",
        r"/(asyncio|uvloop|concurrent|threading|multiprocessing|selectors|queue)",
    ),
)
FRAME = re.compile(r"\((?P<path>[^():]+)(?::\d+)?\)$")


def group_of(stack: str) -> str:
    """The group of a collapsed stack (frames joined by ';', innermost last)."""
    frames = stack.split(";")
    if len(frames) == 1 or frames[-1].startswith("thread "):
        return "no Python frame (native code)"
    for frame in reversed(frames):
        match = FRAME.search(frame.strip())
        if not match:
            continue
        path = match.group("path")
        for name, pattern in GROUPS:
            if re.search(pattern, path):
                return name
        if "site-packages" not in path and "/lib/python" in path:
            continue  # a standard-library helper: charge it to its caller's library
        return "other"
    return "other"


def shares(collapsed: str) -> Counter[str]:
    """Samples per group from py-spy's raw (collapsed) output: `frame;frame;... count`."""
    counts: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[group_of(stack)] += int(count)
    return counts
