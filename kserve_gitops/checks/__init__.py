"""The checks behind `make validate`: schemas, policies, pins, platform consistency."""
