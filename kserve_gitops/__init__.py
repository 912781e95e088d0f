"""kserve-gitops harness: the logic that Make targets, tests and load tests share."""
