"""The remote-write gateway: HTTP edge, validation, WAL, head and the strata command."""
