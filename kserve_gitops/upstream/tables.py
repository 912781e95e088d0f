"""Tab-separated tables with a header line: the CRD pins (config/crds.tsv) and the provenance
list of an offline chart folder (CHART_DIR/sources.tsv)."""

from __future__ import annotations

import csv
from pathlib import Path

from kserve_gitops.repo import Repo


def read_tsv(
    repo: Repo, path: Path, required: tuple[str, ...], error: type[Exception], what: str
) -> list[dict[str, str]]:
    """Every row as a mapping; a row missing a required column raises `error` naming the line."""
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except FileNotFoundError as exc:
        raise error(f"{repo.rel(path)}: {what} not found") from exc
    for line, row in enumerate(rows, start=2):
        missing = [k for k in required if not row.get(k)]
        if missing:
            raise error(f"{repo.rel(path)}:{line}: missing column(s) {', '.join(missing)}")
    return rows
