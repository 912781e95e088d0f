"""The suite. `REPO` is the checkout under test, for parametrizing over what it declares
(environments, models) at collection time; tests that break a checkout use `repo_copy`."""

from kserve_gitops.repo import Repo

REPO = Repo.discover()
