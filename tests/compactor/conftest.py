"""Fixtures of the compactor tests: the block tests' bucket on each backend."""

from tests.blocks.conftest import bucket

__all__ = ["bucket"]
