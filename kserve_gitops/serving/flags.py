"""Command-line value types the serve commands share."""

from __future__ import annotations

import argparse


def boolean(text: str) -> bool:
    """true/false, yes/no, on/off or 1/0, as KServe's and MLServer's settings accept them."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
