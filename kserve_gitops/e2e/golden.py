"""The rows the e2e sends to a model and the classes every protocol must answer:
e2e/predictions/<model>.yaml."""

from __future__ import annotations

import yaml

from kserve_gitops.repo import Repo
from kserve_gitops.repo.render import RenderError

Rows = tuple[tuple[float, ...], ...]


def predictions(repo: Repo, model: str) -> tuple[tuple[Rows, tuple[int, ...]], ...]:
    """e2e/predictions/<model>.yaml: the rows the e2e sends to `model` and the classes every
    protocol must answer."""
    path = repo.e2e / "predictions" / f"{model}.yaml"
    where = repo.rel(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError:
        raise RenderError(
            f"{where}: missing: the e2e verifies model {model} with the rows and classes there"
        ) from None
    try:
        return tuple(
            (
                tuple(tuple(float(x) for x in row) for row in item["rows"]),
                tuple(int(c) for c in item["expect"]),
            )
            for item in doc
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RenderError(
            f"{where}: expected a list of {{rows: [[numbers]], expect: [classes]}} ({exc})"
        ) from None
