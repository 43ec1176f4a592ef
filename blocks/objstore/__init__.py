"""Object stores: one interface, a local-directory and an S3 backend; docs/object-stores.md."""

from blocks.objstore.base import InvalidKey, InvalidRange, ObjectStore
from blocks.objstore.factory import InvalidStoreURL, open_store

__all__ = ["InvalidKey", "InvalidRange", "InvalidStoreURL", "ObjectStore", "open_store"]
