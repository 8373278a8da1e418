"""The S3 backend: any S3-compatible server, through the ``minio`` client."""

from .storage import DEFAULT_PART_SIZE, MIN_PART_SIZE, S3Storage

__all__ = ["DEFAULT_PART_SIZE", "MIN_PART_SIZE", "S3Storage"]
