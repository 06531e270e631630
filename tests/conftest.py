"""Fixtures shared by the test folders: the S3-compatible server (see ``_object_store``)."""

from _object_store import s3_endpoint, s3_env

__all__ = ["s3_endpoint", "s3_env"]
