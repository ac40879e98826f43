"""Reading a tree's files as kustomize's load restrictor allows, and no more.

A tree may come from anyone (a pull request, a generated directory), so its
references are refused when they lead anywhere but a regular file under the
tree's root, and nothing is opened or read before that is known:

- an absolute path, or a relative one that climbs out (``../../etc/passwd``),
  is refused as written (kustomize's ``LoadRestrictionsRootOnly``, its default);
- a symlink is followed only if where it leads is under the root too;
- only regular files are read: a FIFO, a device (``/dev/zero``) or a socket is
  refused from ``stat`` alone, and files are opened non-blocking, without
  following a last-moment symlink, and checked again on the open descriptor;
- every file read is capped in size (it is refused from its size, before
  reading, when over), and so are the whole tree's bytes and files.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_TREE_BYTES = 256 * 1024 * 1024
MAX_FILES = 100_000


class TreeRefusal(Exception):
    """A path or file the tree may not use: what, and why (the message is for the user)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


class TreeFiles:
    """The files of one tree, under ``root`` (a directory), read within the bounds above."""

    def __init__(self, root: Path):
        self.root = os.path.abspath(root)
        self.real_root = os.path.realpath(root)
        self.bytes_read = 0
        self.files_read = 0

    def refer(self, base: Path, entry: str) -> Path:
        """The path ``entry`` names from directory ``base`` (a kustomization's ``resources``
        item, a schema annotation), once it is known to stay under the root."""
        if os.path.isabs(entry):
            raise TreeRefusal(
                f"{entry} is an absolute path; a tree names its files relative to itself (kustomize's"
                " load restrictor refuses it too)"
            )
        joined = os.path.normpath(os.path.join(os.path.abspath(base), entry))
        if not _within(joined, self.root):
            raise TreeRefusal(
                f"{entry} is outside the tree ({self.root}); kustomize's load restrictor refuses it too:"
                " copy what it names into the tree"
            )
        return Path(joined)

    def real(self, path: Path) -> str:
        """Where ``path`` leads once symlinks are followed, refused if that is outside the root."""
        real = os.path.realpath(path)
        if not _within(real, self.real_root):
            raise TreeRefusal(
                f"{path} is a symlink leading outside the tree (to {real}); meshwasm reads only files"
                " under the tree"
            )
        return real

    def kind(self, path: Path) -> str:
        """``dir``, ``file`` or ``missing`` for a path under the root; :class:`TreeRefusal` for
        anything else (a FIFO, a device, a socket, a symlink leading out)."""
        return self._kind_at(path, self.real(path))

    def _kind_at(self, path: Path, real: str) -> str:
        """:meth:`kind` of ``path``, whose symlinks lead to ``real`` (checked to be under the root)."""
        try:
            mode = os.stat(real).st_mode
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            raise TreeRefusal(f"{path}: cannot stat: {exc.strerror}") from None
        if stat.S_ISDIR(mode):
            return "dir"
        if stat.S_ISREG(mode):
            return "file"
        raise TreeRefusal(
            f"{path} is {_kind(mode)}, not a regular file; meshwasm reads only regular files"
            " (it was not opened)"
        )

    def read_text(self, path: Path, *, limit: int = MAX_FILE_BYTES) -> str:
        """The text of a regular file under the root, at most ``limit`` bytes, as UTF-8."""
        # One resolution serves the check and the open (the open still refuses a last-moment symlink).
        real = self.real(path)
        if self._kind_at(path, real) != "file":
            raise TreeRefusal(f"{path} is not a file")
        if self.files_read >= MAX_FILES:
            raise TreeRefusal(f"the tree has more than {MAX_FILES:,} files; meshwasm reads no more")
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(real, flags)
        except OSError as exc:
            raise TreeRefusal(f"{path}: cannot open: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):  # replaced between the check and the open
                raise TreeRefusal(f"{path} is {_kind(info.st_mode)}, not a regular file; it was not read")
            if info.st_size > limit:
                raise TreeRefusal(
                    f"{path} is {info.st_size:,} bytes, over the {limit:,}-byte limit for one file;"
                    " it was not read"
                )
            chunks: list[bytes] = []
            size = 0
            while size <= limit:
                chunk = os.read(fd, min(1 << 20, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > limit:
                raise TreeRefusal(f"{path} grew past the {limit:,}-byte limit for one file while read")
        finally:
            os.close(fd)
        self.files_read += 1
        self.bytes_read += size
        if self.bytes_read > MAX_TREE_BYTES:
            raise TreeRefusal(
                f"the tree's files add up to more than {MAX_TREE_BYTES:,} bytes; meshwasm reads no more"
            )
        try:
            return b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TreeRefusal(f"{path} is not UTF-8 text (byte {exc.start})") from None
