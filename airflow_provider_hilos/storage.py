"""Files the provider reads and writes, local or on object storage, through Airflow's ``ObjectStoragePath``.

Every file it writes (a report, a plan, an export, the sync state) is written to a temporary name next to its
target and moved into place only once complete (:class:`AtomicText`): a failed or killed task leaves no half
file under the target name.
"""

from __future__ import annotations

import os
import uuid
from typing import IO, Any, Protocol, cast


class StoragePath(Protocol):
    """The part of ``ObjectStoragePath`` (or ``pathlib.Path``) this provider uses (``ObjectStoragePath`` is
    not typed; this says what is relied on)."""

    def __truediv__(self, other: str) -> StoragePath: ...
    @property
    def parent(self) -> StoragePath: ...
    @property
    def name(self) -> str: ...
    def open(self, mode: str = ..., encoding: str | None = ..., newline: str | None = ...) -> IO[str]: ...
    def mkdir(self, parents: bool = ..., exist_ok: bool = ...) -> None: ...
    def exists(self) -> bool: ...
    def is_dir(self) -> bool: ...
    def iterdir(self) -> Any: ...
    def unlink(self) -> None: ...
    def rmdir(self) -> None: ...
    def rename(self, target: Any) -> Any: ...


def storage_path(path: str | os.PathLike[str] | StoragePath) -> StoragePath:
    """An ``ObjectStoragePath`` for a path or URL (a plain path is a local file)."""
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    if isinstance(path, ObjectStoragePath):
        return cast(StoragePath, path)
    text = str(path)
    if "://" not in text:  # a local path: "~" is the home folder (as in a shell), and a relative path is relative
        # to the current folder (Airflow 2's ObjectStoragePath would read "out.jsonl" as "/out.jsonl")
        text = os.path.abspath(os.path.expanduser(text))
    return cast(StoragePath, ObjectStoragePath(text))


def same_place_key(path: str | os.PathLike[str] | StoragePath) -> str:
    """A key equal for two spellings of one location (``./a.csv``, ``a.csv``, ``file:///abs/a.csv``), to tell
    whether an output would overwrite an input."""
    location = storage_path(path)
    if is_local(location):
        return "file://" + os.path.realpath(local_path(location))
    return f"{getattr(location, 'protocol', '')}://{str(getattr(location, 'path', location)).strip('/')}"


def is_local(path: StoragePath) -> bool:
    """Whether ``path`` is on this machine's file system (not an object store)."""
    return str(getattr(path, "protocol", "") or "") in ("", "file", "local")


def local_path(path: StoragePath) -> str:
    """The file system path of a local ``path`` (``file:///tmp/x`` -> ``/tmp/x``)."""
    return str(getattr(path, "path", None) or path)


def make_folder(folder: StoragePath) -> None:
    """Create ``folder`` and its parents if missing; two tasks creating it at the same moment both succeed
    (``ObjectStoragePath.mkdir`` checks, then creates, and can raise ``FileExistsError`` in between).

    :raises OSError: it can't be created (on an object store, only if it is not there afterwards either).
    """
    if is_local(folder):
        os.makedirs(local_path(folder), exist_ok=True)
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        if not folder.is_dir():
            raise


def make_parent(path: StoragePath) -> None:
    """Create the folder ``path`` goes into (object stores have no folders: nothing to do there)."""
    try:
        make_folder(path.parent)
    except OSError:
        if is_local(path):
            raise


class AtomicText:
    """A text file written to a temporary name beside ``target`` and moved into place by :meth:`commit`.

    :param target: where the file goes.
    """

    def __init__(self, target: StoragePath) -> None:
        self.target = target
        self.temporary = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
        self._handle: IO[str] | None = None
        #: whether the file was moved into place (so a result may name it)
        self.committed = False

    def open(self) -> IO[str]:
        """Create the folder if needed and open the temporary file for writing.

        :raises IsADirectoryError: the target is a folder (found now, before anything is done, not when the file is
            moved into place at the end).
        """
        if self.target.exists() and self.target.is_dir():
            raise IsADirectoryError(21, "Is a directory (give a file's path, not a folder's)", str(self.target))
        make_parent(self.target)
        self._handle = self.temporary.open("w", encoding="utf-8", newline="")
        return self._handle

    def commit(self) -> None:
        """Close the temporary file and move it to the target (replacing an older one)."""
        self._close()
        _replace(self.temporary, self.target)
        self.committed = True

    def abort(self) -> None:
        """Close and remove the temporary file: the target is left as it was."""
        self._close()
        try:
            self.temporary.unlink()
        except OSError:  # never created, or already gone
            pass

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _replace(source: StoragePath, target: StoragePath) -> None:
    if is_local(source):
        os.replace(local_path(source), local_path(target))
    else:  # object stores: fsspec's move (a copy, then a delete of the temporary object)
        source.rename(target)
