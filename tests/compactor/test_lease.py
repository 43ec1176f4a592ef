"""The compactor lease on a real bucket (a directory, and SeaweedFS over S3)."""

from __future__ import annotations

import time

import pytest

from blocks.objstore.base import ObjectStore
from compactor.lease import Lease, LeaseLost, LeaseState, lease_key


def test_one_holder_at_a_time_until_release(bucket: ObjectStore) -> None:
    first = Lease(bucket, "t", "first", ttl_s=60)
    second = Lease(bucket, "t", "second", ttl_s=60)
    assert first.acquire()
    assert not second.acquire()
    assert Lease(bucket, "other-tenant", "second", ttl_s=60).acquire()
    first.renew()
    first.release()
    assert second.acquire()
    assert not first.acquire()


def test_a_lease_that_ran_out_is_taken_over_and_its_holder_stops(bucket: ObjectStore) -> None:
    crashed = Lease(bucket, "t", "crashed", ttl_s=0.05)
    assert crashed.acquire()
    time.sleep(0.1)
    successor = Lease(bucket, "t", "successor", ttl_s=60)
    assert successor.acquire()
    with pytest.raises(LeaseLost):
        crashed.renew()
    # A late release by the old holder must not free the successor's lease.
    crashed.release()
    assert not Lease(bucket, "t", "third", ttl_s=60).acquire()


def test_an_unreadable_lease_object_counts_as_run_out(bucket: ObjectStore) -> None:
    bucket.put(lease_key("t"), b"not json")
    assert LeaseState.decode(bucket.get(lease_key("t"))) is None
    assert Lease(bucket, "t", "me", ttl_s=60).acquire()
