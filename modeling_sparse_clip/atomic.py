"""Write a file or a folder so that it either appears complete or not at all.

Every cache, checkpoint and dataset the package writes goes through these two helpers: a run killed
half way leaves only a temporary name behind, never a truncated file under the real one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


def publish_mode(path: str | os.PathLike) -> None:
    """If `path` is private (no access for group and others), give it the mode a plain `open()`/`mkdir()`
    would have: 0o666/0o777 minus the umask (0644/0755 under the usual umask 022).

    Writers that go through a private temporary file and rename it (safetensors >= 0.8,
    `tempfile.mkstemp`/`mkdtemp`) leave 0600/0700, unreadable to the other users of a shared folder."""
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode) or mode & 0o077:
        return
    os.chmod(path, (0o777 if stat.S_ISDIR(mode) else 0o666) & ~_umask())


def publish_tree(folder: str | os.PathLike) -> None:
    """`publish_mode` for `folder` and everything inside it."""
    publish_mode(folder)
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            publish_mode(os.path.join(root, name))


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path` (atomic on POSIX).

        with atomic_file(cache) as tmp:
            save_file(tensors, tmp)

    The temporary name keeps the suffix (libraries that pick a format by extension still work) and
    the final file gets the usual 0644-style permissions (umask), not a private temp file's.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        publish_mode(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; on success it replaces `path` (which may exist).

    A folder that exists under the real name is therefore always complete; it and what it holds get the
    usual umask permissions (`publish_tree`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        publish_tree(tmp)
        if path.exists():
            old = path.with_name(f"{path.name}.old-{os.getpid()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically; returns the path."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
