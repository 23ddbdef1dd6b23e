"""Parquet results store.

Layout under the output root (all paths absolute; nothing CWD-relative)::

    units/<unit_id>.json                 what a unit is: model, condition, pipeline, data set, provenance
    per_image/<unit_id>/part-*.parquet   one file per finished batch (written atomically)
    summaries/<unit_id>.<cond>.parquet   one row per finished (model, condition); <cond> hashes the
                                         condition name (two conditions with the same pipeline, e.g.
                                         decoder/ffmpeg and imagenet-s/ffmpeg+pil-bilinear, share the
                                         unit's per-image rows and get a summary each)

A *unit* is one (model + weights, condition pipeline, data set) evaluation; its id is a hash
of exactly those, so re-running the same command finds the same units: finished units are
skipped, and an interrupted unit resumes with the images that no part file holds yet.
Each part is written to a temporary name and renamed, so a killed run loses at most its
in-flight batch and never leaves a half-written part or duplicate rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PER_IMAGE_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("unit_id", pa.string()), ("model", pa.string()),
    ("condition", pa.string()), ("family", pa.string()), ("dataset", pa.string()),
    ("file", pa.string()), ("label", pa.int32()), ("pred", pa.int32()),
    ("top5", pa.list_(pa.int32())), ("top5_prob", pa.list_(pa.float32())),
    ("correct", pa.bool_()), ("correct5", pa.bool_()), ("status", pa.string()),
])
#: per-image rows of adversarial units: the columns above (``pred`` etc. on the adversarial
#: image) plus nullable ones: the clean prediction of the same run, the perturbation's norm
#: in the attack's threat model, and the seed of the image's batch.  Older parts and other
#: units simply lack them (read back as missing values).
ADV_PER_IMAGE_SCHEMA = PER_IMAGE_SCHEMA.append(pa.field("clean_pred", pa.int32())) \
    .append(pa.field("perturbation", pa.float64())).append(pa.field("attack_seed", pa.int64()))


class StoreError(Exception):
    """A store file that cannot be read; the message names the file."""


class ResultsStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.problems: list[str] = []

    # ------------------------------------------------------------------ paths
    def _dir(self, name: str) -> Path:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def unit_dir(self, unit_id: str) -> Path:
        return self._dir("per_image") / unit_id

    # ------------------------------------------------------------------ units
    def write_unit(self, unit_id: str, spec: dict) -> None:
        _atomic_write_bytes(self._dir("units") / f"{unit_id}.json",
                            json.dumps(spec, indent=1, sort_keys=True, default=str).encode())

    def unit(self, unit_id: str) -> dict:
        p = self.root / "units" / f"{unit_id}.json"
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise StoreError(f"{p}: cannot read unit spec ({e})") from None

    # ------------------------------------------------------------------ per-image rows
    def append_batch(self, unit_id: str, rows: pd.DataFrame, schema: pa.Schema = PER_IMAGE_SCHEMA) -> Path:
        d = self.unit_dir(unit_id)
        d.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pandas(rows, schema=schema, preserve_index=False)
        target = d / f"part-{uuid.uuid4().hex[:12]}.parquet"
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".parquet")
        os.close(fd)
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def read_unit_rows(self, unit_id: str) -> pd.DataFrame:
        d = self.root / "per_image" / unit_id
        parts = sorted(d.glob("part-*.parquet")) if d.is_dir() else []
        frames = []
        for p in parts:
            try:
                frames.append(pq.read_table(p).to_pandas())
            except Exception as e:
                raise StoreError(f"{p}: corrupt parquet file ({type(e).__name__}: {e}); delete it to "
                                 "recompute that batch") from None
        if not frames:
            return PER_IMAGE_SCHEMA.empty_table().to_pandas()
        return pd.concat(frames, ignore_index=True)

    def done_files(self, unit_id: str) -> set[str]:
        return set(self.read_unit_rows(unit_id)["file"])

    def per_image(self) -> pd.DataFrame:
        """Every per-image row of the store (corrupt parts are reported in ``problems``)."""
        frames = []
        base = self.root / "per_image"
        for d in sorted(base.iterdir()) if base.is_dir() else []:
            try:
                frames.append(self.read_unit_rows(d.name))
            except StoreError as e:
                self.problems.append(str(e))
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else PER_IMAGE_SCHEMA.empty_table().to_pandas()

    # ------------------------------------------------------------------ summaries
    def summary_path(self, unit_id: str, condition: str) -> Path:
        tag = hashlib.sha1(condition.encode()).hexdigest()[:8]
        return self._dir("summaries") / f"{unit_id}.{tag}.parquet"

    def has_summary(self, unit_id: str, condition: str) -> bool:
        return self.summary_path(unit_id, condition).is_file()

    def write_summary(self, unit_id: str, row: dict) -> None:
        target = self.summary_path(unit_id, row["condition"])
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".parquet")
        os.close(fd)
        try:
            pq.write_table(pa.Table.from_pylist([row]), tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def summaries(self) -> pd.DataFrame:
        """All summary rows; unreadable files are skipped and named in ``problems``."""
        d = self.root / "summaries"
        frames = []
        for p in sorted(d.glob("*.parquet")) if d.is_dir() else []:
            try:
                frames.append(pq.read_table(p).to_pandas())
            except Exception as e:
                self.problems.append(f"{p}: corrupt parquet file ({type(e).__name__}); delete it and re-run "
                                     "the evaluation to rebuild it")
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _atomic_write_bytes(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
