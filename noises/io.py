"""Atomic file writes, the one helper every writer of the project uses (results store,
generators, weights and data caches, deployment caches).

A file is written under a temporary name in its own folder (``.<name>.tmp-<pid>-<random>``, a
dot-name that no reader globs) and renamed onto its target only when complete, so a killed
process leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def temp_name(target: Path) -> Path:
    """The temporary name beside ``target`` (keeps the suffix, so writers that pick a format from
    it, e.g. ONNX or parquet, still do)."""
    return target.with_name(f".{target.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{target.suffix}")


def is_temp(path: Path) -> bool:
    return path.name.startswith(".")


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it is renamed onto ``target`` when the block
    succeeds and removed when it fails."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists() or tmp.is_symlink():
            tmp.unlink()


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_copy(src: IO[bytes], target: str | os.PathLike) -> None:
    """Copy an open binary stream to ``target`` atomically."""
    with atomic_path(target) as tmp, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out)
