"""Remote read over head and bucket (see docs/architecture.md)."""
