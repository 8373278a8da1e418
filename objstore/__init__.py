"""objstore: one storage interface over posix folders and S3-compatible servers."""

from ._source import Data
from ._version import installed_version
from .attributes import Metadata
from .config import from_config
from .config import from_url as from_url
from .errors import (
    AlreadyExistsError,
    ConfigError,
    IntegrityError,
    InvalidArgumentError,
    InvalidKeyError,
    KeyConflictError,
    MissingExtraError,
    NotExistError,
    ObjectChangedError,
    ObjstoreError,
    OutcomeUnknownError,
    PermissionDeniedError,
    PreconditionFailedError,
    RemoteError,
    SizeMismatchError,
    StorageIOError,
    UnsupportedError,
)
from .fsspec_storage import FsspecStorage
from .info import CleanupResult, CommonPrefix, ObjectInfo
from .memory import MemoryStorage
from .posix import PosixStorage
from .prefixed import PrefixedStorage
from .s3 import S3Storage
from .storage import Storage

__version__ = installed_version()

__all__ = [
    "AlreadyExistsError",
    "CleanupResult",
    "CommonPrefix",
    "ConfigError",
    "MissingExtraError",
    "Data",
    "FsspecStorage",
    "IntegrityError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "KeyConflictError",
    "MemoryStorage",
    "Metadata",
    "NotExistError",
    "ObjectInfo",
    "ObjectChangedError",
    "ObjstoreError",
    "OutcomeUnknownError",
    "PermissionDeniedError",
    "PosixStorage",
    "PrefixedStorage",
    "PreconditionFailedError",
    "RemoteError",
    "S3Storage",
    "SizeMismatchError",
    "Storage",
    "StorageIOError",
    "UnsupportedError",
    "from_config",
    "from_url",
]
