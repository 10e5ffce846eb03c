"""Artifact storage: one interface (``Store``), a local-folder and an S3 backend.

This package is the only place that knows about S3, boto3 or where artifacts live on disk.
boto3 is imported lazily (on the first S3 call), so importing ``storage`` stays cheap.
"""

from storage.local import LocalStore
from storage.provenance import ModelRef, Provenance
from storage.s3 import S3Store
from storage.factory import open_store
from storage.store import Store

__all__ = ["LocalStore", "ModelRef", "Provenance", "S3Store", "Store", "open_store"]
