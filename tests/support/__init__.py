"""Helpers shared by test packages: real servers started for a test run."""
