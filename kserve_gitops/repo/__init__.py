"""The repository: where things live, what it declares, and how it renders."""
