"""Float bit patterns the tests keep coming back to."""

# Prometheus's staleness marker: a signalling NaN with payload 2. Must survive every path.
STALE_NAN = 0x7FF0000000000002
