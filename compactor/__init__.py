"""Compaction, downsampling and retention over the bucket (see docs/architecture.md)."""
