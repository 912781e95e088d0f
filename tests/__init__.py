"""The suite. `REPO` is the checkout under test, for parametrizing over what it declares
(environments, models) at collection time; tests that break a checkout use `repo_copy`."""

from kserve_gitops.repo import Repo

REPO = Repo.discover()


def markdown_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row in `text` (header rows too, rules not), unpadded."""
    rows = [line.strip()[1:-1].split("|") for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row] for row in rows if set("".join(row)) - {"-", " "}]
