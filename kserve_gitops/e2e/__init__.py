"""The e2e: the ordered plan, its executor, and the tools it drives."""
