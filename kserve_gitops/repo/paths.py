"""Where things live in the repository, resolved once from the package location."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(os.environ.get("KGOPS_ROOT", Path(__file__).resolve().parents[2]))
CHARTS = ROOT / "charts"
ENVIRONMENTS = ROOT / "environments"
MODELS = ROOT / "models"
CONFIG = ROOT / "config"
SCHEMAS = ROOT / "schemas"
VERSIONS = ROOT / "versions.yaml"
REPORTS = ROOT / "reports"
CACHE = ROOT / ".cache"
# In promotion order; `make validate` checks it against environments/*/environment.yaml.
ENVIRONMENT_NAMES = ("dev", "staging", "prod")


def rel(path: Path) -> str:
    """A path as users see it in messages: relative to the repository when inside it."""
    try:
        root = Path(os.environ.get("KGOPS_ROOT", ROOT))  # at call time: tests run copies in-process
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
