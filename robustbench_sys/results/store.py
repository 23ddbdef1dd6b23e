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
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from robustbench_sys.noises.io import atomic_path, atomic_write_bytes, is_temp

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
        atomic_write_bytes(self._dir("units") / f"{unit_id}.json",
                            json.dumps(spec, indent=1, sort_keys=True, default=str).encode())

    def unit_or_empty(self, unit_id: str) -> dict:
        """The stored unit spec, or ``{}`` when none is stored (or it cannot be read)."""
        try:
            return self.unit(unit_id)
        except StoreError:
            return {}

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
        with atomic_path(target) as tmp:
            pq.write_table(table, tmp)
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
        with atomic_path(self.summary_path(unit_id, row["condition"])) as tmp:
            pq.write_table(pa.Table.from_pylist([row]), tmp)

    def summaries(self) -> pd.DataFrame:
        """All summary rows (:func:`read_summaries`); unreadable files are skipped and named in
        ``problems``."""
        df, problems = read_summaries(self.root)
        self.problems.extend(problems)
        return df


# ---------------------------------------------------------------------- summary rows
#: the columns of a stored summary row (``eval.scoring.summarise``; attack units add the
#: adversarial block).  Every reader gets these types whatever a file's writer inferred (a
#: column whose values were all null in one file, or an int where another file has a float);
#: columns not named here are kept as stored.  Columns no file has stay absent (an older store
#: lacks them: readers check, e.g. ``leaderboard.REQUIRED``).
SUMMARY_SCHEMA = pa.schema([
    ("unit_id", pa.string()), ("run_id", pa.string()), ("model", pa.string()), ("arch", pa.string()),
    ("condition", pa.string()), ("family", pa.string()), ("suite", pa.string()), ("suite_version", pa.int64()),
    ("dataset", pa.string()), ("dataset_fingerprint", pa.string()),
    ("n_images", pa.int64()), ("n_errors", pa.int64()), ("n_paired", pa.int64()),
    ("top1", pa.float64()), ("top1_ci_low", pa.float64()), ("top1_ci_high", pa.float64()), ("top5", pa.float64()),
    ("ref_top1", pa.float64()), ("delta_acc", pa.float64()), ("delta_ci_low", pa.float64()),
    ("delta_ci_high", pa.float64()), ("mcnemar_p", pa.float64()), ("n_lost", pa.int64()), ("n_gained", pa.int64()),
    ("flip_rate", pa.float64()),
    ("pipeline", pa.string()), ("pipeline_text", pa.string()), ("reference_pipeline", pa.string()),
    ("weights_sha256", pa.string()), ("deploy_info", pa.string()), ("tags", pa.string()),
    ("provenance", pa.string()), ("run_ids", pa.string()), ("created_at", pa.string()),
    # adversarial units (eval.attack.summary_fields / write_worst_case)
    ("attack", pa.string()), ("attack_params", pa.string()), ("eps", pa.float64()), ("norm", pa.string()),
    ("n_clean_correct", pa.int64()), ("clean_acc", pa.float64()), ("robust_acc", pa.float64()),
    ("robust_acc_ci_low", pa.float64()), ("robust_acc_ci_high", pa.float64()),
    ("attack_robustness", pa.float64()), ("max_perturbation", pa.float64()),
    ("perturbation_within_eps", pa.bool_()), ("validity_flags", pa.string()), ("validity_raised", pa.string()),
    ("wc_group", pa.string()), ("wc_attacks", pa.int64()), ("wcar", pa.float64()), ("wc_robust_acc", pa.float64()),
])


def _conform(table: pa.Table) -> pa.Table:
    """``table`` with every :data:`SUMMARY_SCHEMA` column cast to its declared type (raises
    ``pa.ArrowInvalid`` / ``ArrowNotImplementedError`` / ``ArrowTypeError`` when a value cannot be)."""
    fields = []
    for f in table.schema:
        want = SUMMARY_SCHEMA.field(f.name).type if f.name in SUMMARY_SCHEMA.names else f.type
        fields.append(pa.field(f.name, want))
    target = pa.schema(fields)
    return table if target.equals(table.schema) else table.cast(target)


def read_summaries(root: str | os.PathLike) -> tuple[pd.DataFrame, list[str]]:
    """Every ``summaries/*.parquet`` row under a results root, typed by :data:`SUMMARY_SCHEMA`,
    and the files that could not be read (each named, with what to do).

    Temporary files (names starting with ``.``: a write that a kill interrupted) are never
    summaries and are skipped.  One footer read per file in a thread pool and one Arrow ->
    pandas conversion: 1000 files in about 1 s (benchmarks/bench_dashboard.py).  No rows gives
    an empty frame with the schema's columns."""
    from concurrent.futures import ThreadPoolExecutor

    d = Path(root).expanduser() / "summaries"
    files = [p for p in sorted(d.glob("*.parquet")) if not is_temp(p)] if d.is_dir() else []

    def one(p: Path):
        try:
            table = pq.ParquetFile(p).read(use_threads=False)
        except Exception as e:
            return None, (f"{p}: corrupt parquet file ({type(e).__name__}); delete it and re-run the "
                          "evaluation to rebuild it")
        try:
            return _conform(table), None
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
            return None, (f"{p}: not a summary row of this version ({type(e).__name__}: {e}); delete it and "
                          "re-run the evaluation to rebuild it")

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(files)))) as ex:
        got = list(ex.map(one, files))
    tables = [t for t, _ in got if t is not None and t.num_rows]
    problems = [msg for _, msg in got if msg]
    if not tables:
        return SUMMARY_SCHEMA.empty_table().to_pandas(), problems
    try:
        return pa.concat_tables(tables, promote_options="permissive").to_pandas(), problems
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):  # an extra column of two types
        return pd.concat([t.to_pandas() for t in tables], ignore_index=True), problems
