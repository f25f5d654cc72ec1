"""Pieces of the benchmarks that are not benchmarks themselves (`make bench` runs every `bench/*.py`)."""

ECHO_STATUS = {"scan": 200, "identity_keys": 200, "shopper": 201, "purchases": 201}
"""What the echo baseline answers per route: the success status of the real route."""
