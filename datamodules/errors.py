"""The error and warning types of the data pipeline; every message names the file (or manifest) and the reason.

    ManifestError          a manifest that cannot be used (not JSON, a missing key, a wrong type)
    BadSampleError         a wav or image that cannot be used (missing, empty, corrupt, undecodable)
    FeatureCacheError      a missing, stale or mismatched feature cache
    SkippedSamplesWarning  bad samples were skipped (on_bad_sample="skip"), counted once per epoch
    ManifestWarning        a usable manifest with something odd in it (duplicate uttids, outlier captions)
"""

from __future__ import annotations

import os


class ManifestError(ValueError):
    """A manifest that cannot be used: not JSON, a missing key, a wrong type. The message names the manifest."""


class BadSampleError(ValueError):
    """A wav or image that cannot be used (missing, empty, corrupt, undecodable).

    The message names the file and the reason; `path` and `reason` are also kept as attributes. The single-string
    constructor is kept working so that PyTorch can re-raise the error from a DataLoader worker with its type.
    """

    def __init__(self, message: str, path: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.path = path
        self.reason = reason

    @classmethod
    def for_file(cls, kind: str, path: str | os.PathLike, reason: str) -> BadSampleError:
        """`BadSampleError.for_file("wav", "a/b.wav", "file not found")` -> "bad wav a/b.wav: file not found"."""
        return cls(f"bad {kind} {os.fspath(path)}: {reason}", path=os.fspath(path), reason=reason)


def require_nonempty_file(kind: str, path: str) -> None:
    """BadSampleError naming the file when it is missing, unreadable or empty: the checks before any decoding."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise BadSampleError.for_file(kind, path, "file not found") from None
    except OSError as err:
        raise BadSampleError.for_file(kind, path, f"cannot read: {err.strerror or err}") from None
    if size == 0:
        raise BadSampleError.for_file(kind, path, "empty file (0 bytes)")


class FeatureCacheError(RuntimeError):
    """A missing, stale or mismatched feature cache; the message says which and how to rebuild it."""


class SkippedSamplesWarning(UserWarning):
    """Bad samples were skipped (`on_bad_sample="skip"`); the message counts them and names the first few."""


class ManifestWarning(UserWarning):
    """A usable manifest with something odd in it (duplicate uttids, captions far longer than the rest)."""
