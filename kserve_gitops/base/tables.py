"""Markdown tables (tabulate's GitHub layout) of cells as their callers formatted them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tabulate import tabulate


def markdown(rows: Iterable[Sequence[object]], head: Sequence[str]) -> list[str]:
    """The table's lines, each cell as str() shows it: tabulate would reformat numbers (its
    floatfmt) and numeric strings ("1.50" as 1.5)."""
    cells = [[str(cell) for cell in row] for row in rows]
    return tabulate(cells, head, tablefmt="github", disable_numparse=True).splitlines()
