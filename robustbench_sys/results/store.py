"""Parquet results store.

Layout under the output root (all paths absolute; nothing CWD-relative)::

    units/<unit_id>.json                 what a unit is: model, condition, pipeline, data set, provenance
    per_image/<unit_id>/part-*.parquet   one file per finished batch (written atomically)
    per_image/<unit_id>/unit.parquet     a finished unit's parts compacted into one file
                                         (:meth:`ResultsStore.compact_unit`, when its summary is written)
    summaries/<unit_id>.<cond>.parquet   one row per finished (model, condition); <cond> hashes the
                                         condition name (two conditions with the same pipeline, e.g.
                                         decoder/ffmpeg and imagenet-s/ffmpeg+pil-bilinear, share the
                                         unit's per-image rows and get a summary each)
    index/summaries.parquet              every summary row in one table, a cache that
                                         :func:`read_summaries` validates per file and rebuilds when stale

A *unit* is one (model + weights, condition pipeline, data set) evaluation; its id is a hash
of exactly those, so re-running the same command finds the same units: finished units are
skipped, and an interrupted unit resumes with the images that no part file holds yet.
Each part is written to a temporary name and renamed, so a killed run loses at most its
in-flight batch and never leaves a half-written part or duplicate rows.

Several processes may write one store at once (two ``eval`` commands, two Dask clients): a
per-unit lock (``locks/<unit_id>.lock``, :meth:`ResultsStore.unit_lock`, an exclusive
``flock``) is held while a process runs a unit's pending images and while it writes that
unit's summary, so a second writer on the same unit waits and then finds the batches already
done; different units run in parallel.  The reader keeps one row per (unit, image) in any case
(:meth:`ResultsStore.read_unit_rows`), and :meth:`ResultsStore.verify` reports (and repairs)
duplicate rows, unreadable parts and left-over temporary files.

Scale (issue 15): a finished unit has one per-image file.  :meth:`ResultsStore.compact_unit` writes
the unit's rows (first part in name order wins per image) to a temporary name, renames it onto
``unit.parquet`` -- whose footer names the parts it covers -- and then deletes those parts.  A
crash before the rename leaves the parts (and a temporary file); a crash after it leaves covered
parts that every reader skips (the compacted file supersedes them) and ``verify --repair``
deletes, so nothing is lost or counted twice.  Summaries stay one file each for the writers; the
readers use the compacted summaries table plus any summary file added or rewritten since it was
built (matched by name, inode, mtime and size), so 10,000 summaries read as one file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextlib import nullcontext as _nullcontext
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from robustbench_sys.errors import UserError
from robustbench_sys.noises.io import atomic_path, atomic_write_bytes, is_temp

try:
    import fcntl
except ImportError:   # not POSIX: no inter-process locking (one writer per store)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("robustbench_sys.results")

#: per process: lock file path -> [thread lock, open descriptor, depth] (see ResultsStore.unit_lock)
_HELD: dict[str, list] = {}
_HELD_GUARD = threading.Lock()

#: ``label_prob`` (nullable): the softmax probability of the image's label, for the negative
#: log-likelihood (:mod:`robustbench_sys.metrics.calibration`); null on an error row or a label
#: outside the model's classes.  Parts written before it existed lack the column: read back as
#: missing (NaN), so the NLL of such a unit is unknown, never 0.
PER_IMAGE_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("unit_id", pa.string()), ("model", pa.string()),
    ("condition", pa.string()), ("family", pa.string()), ("dataset", pa.string()),
    ("file", pa.string()), ("label", pa.int32()), ("pred", pa.int32()),
    ("top5", pa.list_(pa.int32())), ("top5_prob", pa.list_(pa.float32())),
    ("correct", pa.bool_()), ("correct5", pa.bool_()), ("status", pa.string()),
    ("label_prob", pa.float32()),
])
#: per-image rows of adversarial units: the columns above (``pred`` etc. on the adversarial
#: image) plus nullable ones: the clean prediction of the same run, the perturbation's norm
#: in the attack's threat model, the seed of the image's batch and, for an attack composed of
#: components run in sequence (AutoAttack), ``broken_by``: the component that fooled the model
#: first, ``""`` when none did (null: not recorded).  Older parts and other units simply lack
#: them (read back as missing values: unknown).
ADV_PER_IMAGE_SCHEMA = PER_IMAGE_SCHEMA.append(pa.field("clean_pred", pa.int32())) \
    .append(pa.field("perturbation", pa.float64())).append(pa.field("attack_seed", pa.int64())) \
    .append(pa.field("broken_by", pa.string()))


#: a finished unit's compacted per-image file (per_image/<unit_id>/unit.parquet) and the footer key
#: naming the part files it covers (a JSON list)
COMPACT_NAME = "unit.parquet"
COVERS_KEY = b"robustbench_sys.covers"


def compacted_parts(path: Path) -> set[str]:
    """The part names a compacted file covers (from its footer; empty when it cannot be read)."""
    try:
        meta = pq.read_schema(path).metadata or {}
        return set(json.loads(meta.get(COVERS_KEY, b"[]")))
    except Exception:
        return set()


class StoreError(UserError):
    """A store file that cannot be read; the message names the file and what to do (the CLI
    prints it as its one error line)."""


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

    # ------------------------------------------------------------------ locks
    def lock_path(self, unit_id: str) -> Path:
        return self._dir("locks") / f"{unit_id}.lock"

    @contextmanager
    def unit_lock(self, unit_id: str, *, shared: bool = False) -> Iterator[None]:
        """Hold the unit's exclusive lock (``flock`` on ``locks/<unit_id>.lock``): another process
        (or thread) asking for the same unit waits until it is released.  Re-entrant within one
        thread (in the mode of the outermost hold).  Lock files are never deleted (deleting one
        would let two holders lock two different files).

        ``shared``: a shared hold (``LOCK_SH``), taken by the image shards of a unit that Dask
        workers write at once (each shard also holds its own exclusive ``<unit_id>.<shard>``
        lock); an exclusive holder (a whole-unit run, compaction, summarising, repair) waits
        for every shard, and shards wait for it."""
        path = self.lock_path(unit_id)
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) if fcntl is not None else 0
        with _HELD_GUARD:
            entry = _HELD.setdefault(str(path), [threading.RLock(), None, 0])
        with entry[0]:
            if entry[2] == 0 and fcntl is not None:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    try:
                        fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    except BlockingIOError:
                        log.info("unit %s: another process is writing it; waiting for its lock", unit_id)
                        fcntl.flock(fd, mode)
                except BaseException:
                    os.close(fd)
                    raise
                entry[1] = fd
            entry[2] += 1
            try:
                yield
            finally:
                entry[2] -= 1
                if entry[2] == 0 and entry[1] is not None:
                    fd, entry[1] = entry[1], None
                    try:
                        fcntl.flock(fd, fcntl.LOCK_UN)
                    finally:
                        os.close(fd)

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

    def _parts(self, unit_id: str) -> list[Path]:
        """The unit's finished part files, in the stable order readers use (by name)."""
        d = self.root / "per_image" / unit_id
        return sorted(p for p in d.glob("part-*.parquet") if not is_temp(p)) if d.is_dir() else []

    def unit_files(self, unit_id: str) -> tuple[list[Path], list[Path]]:
        """(the unit's per-image files in reader order: its compacted file first, then the parts it
        does not cover; the left-over parts the compacted file covers, which an interrupted
        compaction did not delete and every reader skips)."""
        parts = self._parts(unit_id)
        compact = self.root / "per_image" / unit_id / COMPACT_NAME
        if not compact.is_file():
            return parts, []
        covered = compacted_parts(compact)
        return [compact, *(p for p in parts if p.name not in covered)], [p for p in parts if p.name in covered]

    def write_compacted(self, unit_id: str, table: pa.Table, covers: list[str] | tuple = ()) -> Path:
        """Write ``table`` (one row per image) as the unit's compacted file, atomically, recording
        the part names it ``covers`` in its footer.  The unit's lock is the caller's."""
        meta = dict(table.schema.metadata or {})
        meta[COVERS_KEY] = json.dumps(sorted(set(covers))).encode()
        target = self.unit_dir(unit_id) / COMPACT_NAME
        with atomic_path(target) as tmp:
            pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd")
        return target

    def compact_unit(self, unit_id: str) -> Path | None:
        """Compact the unit's per-image files into ``per_image/<unit_id>/unit.parquet`` under its lock
        and return that path (None: no rows).  Rows are kept in reader order, one per image (the
        first file holding it wins), so :meth:`read_unit_rows` returns the same frame before and
        after.  The new file is renamed into place before any part is deleted, and names the parts
        it covers, so a crash at any point loses no row and never counts one twice.  An unreadable
        file stops the compaction (nothing is changed; a warning says so): the next run quarantines
        it and recomputes its batch."""
        with self.unit_lock(unit_id):
            live, stale = self.unit_files(unit_id)
            compact = self.root / "per_image" / unit_id / COMPACT_NAME
            if live == [compact] or not live:
                for p in stale:
                    p.unlink(missing_ok=True)
                return live[0] if live else None
            tables, covers = [], {p.name for p in stale}
            for p in live:
                try:
                    tables.append(pq.read_table(p))
                except Exception as e:
                    log.warning("unit %s: not compacted, %s is unreadable (%s: %s)", unit_id, p, type(e).__name__, e)
                    return None
                if p == compact:
                    covers |= compacted_parts(p)
                else:
                    covers.add(p.name)
            table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
            dup = table.select(["unit_id", "file"]).to_pandas().duplicated(keep="first").to_numpy()
            if dup.any():
                table = table.filter(pa.array(~dup))
            target = self.write_compacted(unit_id, table, sorted(covers))
            for p in [*live, *stale]:
                if p != compact:
                    p.unlink(missing_ok=True)
            return target

    def read_unit_rows(self, unit_id: str, *, quarantine: bool = False, columns: list[str] | None = None,
                       filter: pc.Expression | None = None) -> pd.DataFrame:
        """The unit's per-image rows, one per (unit_id, file): where two part files hold the same
        image (two writers on one unit without the lock, an older store) the first part in name
        order wins, and a warning names how many rows were dropped.

        An unreadable part file (a truncated or damaged write) is never read past: it raises
        :class:`StoreError` naming the file, or with ``quarantine`` (what an evaluation does, so
        its rerun recomputes that batch) it is moved aside (:meth:`quarantine`) with a warning and
        the rows of the other parts are returned.

        ``columns`` reads only those columns (projection) and ``filter`` (a ``pyarrow.compute``
        expression, e.g. ``pc.field("correct") == False``) only the matching rows; on a compacted
        unit (one file) both are pushed down into the parquet reader."""
        files, _ = self.unit_files(unit_id)
        if columns is not None or filter is not None:
            return self._read_projected(unit_id, files, columns, filter, quarantine)
        frames = []
        for p in files:
            try:
                frames.append(pq.read_table(p).to_pandas())
            except Exception as e:
                if quarantine:
                    self.quarantine(p, e, "this evaluation recomputes its batch")
                    continue
                raise StoreError(f"{p}: corrupt parquet file ({type(e).__name__}: {e}); re-run the evaluation "
                                 "(or `robustbench-sys results verify --repair`) to move it aside and recompute "
                                 "that batch") from None
        if not frames:
            return PER_IMAGE_SCHEMA.empty_table().to_pandas()
        rows = pd.concat(frames, ignore_index=True)
        dup = rows.duplicated(["unit_id", "file"], keep="first")
        if dup.any():
            log.warning("unit %s: %d duplicate per-image row(s) ignored (the first part file holding an "
                        "image wins); `robustbench-sys results verify --repair` removes them",
                        unit_id, int(dup.sum()))
            rows = rows[~dup].reset_index(drop=True)
        return rows

    def _read_projected(self, unit_id: str, files: list[Path], columns: list[str] | None,
                        filter: pc.Expression | None, quarantine: bool) -> pd.DataFrame:
        """:meth:`read_unit_rows` with a column projection and / or a row filter."""
        if len(files) == 1:   # a compacted unit: no duplicates possible, push both down
            try:
                names = pq.read_schema(files[0]).names
                cols = None if columns is None else [c for c in columns if c in names]  # an older file lacks some
                return pq.read_table(files[0], columns=cols, filters=filter).to_pandas()
            except Exception as e:
                if "FieldRef" in str(e):   # the filter names a column the file lacks: the caller's error
                    raise
                if quarantine:
                    self.quarantine(files[0], e, "this evaluation recomputes its batch")
                    return self._read_projected(unit_id, [], columns, filter, quarantine)
                raise StoreError(f"{files[0]}: corrupt parquet file ({type(e).__name__}: {e}); re-run the "
                                 "evaluation (or `robustbench-sys results verify --repair`) to move it aside "
                                 "and recompute that batch") from None
        rows = self.read_unit_rows(unit_id, quarantine=quarantine)   # de-duplicated first, then filtered
        if filter is not None and len(rows):
            table = pa.Table.from_pandas(rows, preserve_index=False)
            rows = table.filter(filter).to_pandas()
        return rows[list(columns)] if columns is not None else rows

    def scan(self, columns: list[str] | None = None, filter: pc.Expression | None = None,
             units: list[str] | None = None) -> pd.DataFrame:
        """Per-image rows of many units (default: all) through ``pyarrow.dataset``, with column
        projection and predicate push-down over the compacted files; a unit that is not compacted
        (still running, or several parts) is read through :meth:`read_unit_rows` (de-duplicated)."""
        base = self.root / "per_image"
        if units is None:
            units = sorted(d.name for d in base.iterdir() if d.is_dir()) if base.is_dir() else []
        single, frames = [], []
        for u in units:
            files, _ = self.unit_files(u)
            if len(files) == 1:
                single.append(str(files[0]))
            elif files:
                frames.append(self.read_unit_rows(u, columns=columns, filter=filter))
        if single:
            dataset = ds.dataset(single, format="parquet", schema=ADV_PER_IMAGE_SCHEMA)
            frames.insert(0, dataset.to_table(columns=columns, filter=filter).to_pandas())
        frames = [f for f in frames if len(f)]
        if not frames:
            empty = ADV_PER_IMAGE_SCHEMA.empty_table()
            return (empty.select(columns) if columns is not None else empty).to_pandas()
        return pd.concat(frames, ignore_index=True)

    def quarantine(self, path: Path, error: BaseException | str, consequence: str) -> Path | None:
        """Move a damaged store file to ``quarantine/<its path under the root>.<time>`` (out of every
        reader's way, kept for inspection), with a warning naming both paths.  Returns the new
        path, or None when another process moved or replaced it first."""
        rel = path.relative_to(self.root)
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        dest = self.root / "quarantine" / rel.parent / f"{rel.name}.{stamp}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(path, dest)
        except FileNotFoundError:
            return None
        why = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
        log.warning("%s: unreadable (%s); moved to %s, %s", path, why, dest, consequence)
        return dest

    def done_files(self, unit_id: str) -> set[str]:
        """The images of the unit that have a stored row (an evaluation's view: unreadable parts
        are quarantined, so their images count as not done).  Reads the ``file`` column only."""
        done: set[str] = set()
        for p in self.unit_files(unit_id)[0]:
            try:
                done.update(pq.read_table(p, columns=["file"]).column("file").to_pylist())
            except Exception as e:
                self.quarantine(p, e, "this evaluation recomputes its batch")
        return done

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

    # ------------------------------------------------------------------ verify / repair
    def verify(self, repair: bool = False) -> list[str]:
        """Check the store; returns one line per problem found (empty: the store is sound).

        Finds duplicate per-image rows (one image in two part files of a unit), unreadable part
        files, unreadable summary files, summaries that counted duplicate rows (``n_images +
        n_errors`` above the unit's distinct images) and temporary files that a killed write left
        behind.  With ``repair`` each is fixed under the unit's lock, so it is safe while other
        processes write the store: duplicate rows are removed from the later part files (the rows
        readers use are kept), unreadable parts and summaries are quarantined (:meth:`quarantine`)
        and over-counting summaries deleted (the next run of the same command recomputes that
        batch / summary), temporary files are deleted.  Each line says what was done when ``repair``."""
        problems: list[str] = []
        fixed = " (repaired)" if repair else ""
        base = self.root / "per_image"
        units = sorted(d.name for d in base.iterdir() if d.is_dir()) if base.is_dir() else []
        distinct: dict[str, int] = {}
        for unit_id in units:
            with self.unit_lock(unit_id) if repair else _nullcontext():
                seen: set[tuple] = set()
                files, stale = self.unit_files(unit_id)
                for p in stale:
                    problems.append(f"{p}: part left over by an interrupted compaction (its rows are in "
                                    f"{COMPACT_NAME}; readers skip it)" + (" (deleted)" if repair else ""))
                    if repair:
                        p.unlink(missing_ok=True)
                for p in files:
                    try:
                        table = pq.read_table(p)
                    except Exception as e:
                        problems.append(self._unreadable(p, "part", "the next run recomputes its batch", e, repair))
                        continue
                    df = table.to_pandas()
                    keys = list(zip(df["unit_id"], df["file"]))
                    dup = [k in seen for k in keys]
                    seen.update(keys)
                    n = sum(dup)
                    if not n:
                        continue
                    problems.append(f"{p}: {n} duplicate per-image row(s) of unit {unit_id} (already in an "
                                    "earlier part file)" + fixed)
                    if repair:
                        keep = df[[not d for d in dup]]
                        if keep.empty:
                            p.unlink()
                        else:
                            with atomic_path(p) as tmp:
                                pq.write_table(table.take(pa.array(keep.index.to_numpy())), tmp)
                distinct[unit_id] = len(seen)
        # summaries: unreadable, or counted more rows than the unit has distinct images
        sdir = self.root / "summaries"
        for p in sorted(sdir.glob("*.parquet")) if sdir.is_dir() else []:
            if is_temp(p):
                continue
            unit_id = p.name.split(".")[0]
            try:
                row = pq.read_table(p).to_pylist()
            except Exception as e:
                with self.unit_lock(unit_id) if repair else _nullcontext():
                    problems.append(self._unreadable(p, "summary", "the next run rebuilds it", e, repair))
                continue
            if len(row) != 1 or unit_id not in distinct or row[0].get("wc_group") is not None:
                continue
            counted = (row[0].get("n_images") or 0) + (row[0].get("n_errors") or 0)
            if counted > distinct[unit_id]:
                problems.append(f"{p}: summary counts {counted} images but unit {unit_id} holds "
                                f"{distinct[unit_id]} distinct ones (duplicate rows were counted)"
                                + (" (deleted; the next run rebuilds it)" if repair else ""))
                if repair:
                    with self.unit_lock(unit_id):
                        p.unlink(missing_ok=True)
        # temporary files (a killed write); a live writer holds the unit's lock, so under the lock
        # none of that unit's temporary files is in flight
        for sub in ("units", "per_image", "summaries"):
            d = self.root / sub
            for p in sorted(d.rglob(".*")) if d.is_dir() else []:
                if not p.is_file() or ".tmp-" not in p.name:
                    continue
                unit_id = p.parent.name if sub == "per_image" else p.name[1:].split(".")[0]
                if repair:
                    with self.unit_lock(unit_id):
                        if not p.exists():      # its writer finished (renamed it) meanwhile
                            continue
                        p.unlink()
                problems.append(f"{p}: temporary file of an interrupted write" + (" (deleted)" if repair else ""))
        return problems

    def _unreadable(self, path: Path, kind: str, consequence: str, error: Exception, repair: bool) -> str:
        """The problem line of an unreadable store file; with ``repair`` it is quarantined."""
        moved = self.quarantine(path, error, consequence) if repair else None
        return (f"{path}: unreadable {kind} file ({type(error).__name__}: {error})"
                + (f" (moved to {moved}; {consequence})" if moved else ""))

    # ------------------------------------------------------------------ summaries
    def summary_path(self, unit_id: str, condition: str) -> Path:
        tag = hashlib.sha1(condition.encode()).hexdigest()[:8]
        return self._dir("summaries") / f"{unit_id}.{tag}.parquet"

    def has_summary(self, unit_id: str, condition: str) -> bool:
        """True when the (unit, condition) summary is stored and readable; an unreadable one is
        quarantined (:meth:`quarantine`), so the run that asks rebuilds it."""
        p = self.summary_path(unit_id, condition)
        if not p.is_file():
            return False
        try:
            pq.read_table(p)
        except Exception as e:
            self.quarantine(p, e, "this evaluation rebuilds it")
            return False
        return True

    def write_summary(self, unit_id: str, row: dict) -> None:
        """Write the (unit, condition) summary row; the unit is finished, so its per-image parts
        are compacted first (:meth:`compact_unit`; a crash between the two leaves a compacted unit
        without a summary, which the next run summarises)."""
        with self.unit_lock(unit_id):
            self.compact_unit(unit_id)
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
    # calibration (metrics.calibration) of the unit and of its reference unit: NaN where unknown (an
    # older store: no column, or per-image parts without label_prob for the NLL)
    ("ece", pa.float64()), ("nll", pa.float64()), ("ref_ece", pa.float64()), ("ref_nll", pa.float64()),
    ("pipeline", pa.string()), ("pipeline_text", pa.string()), ("reference_pipeline", pa.string()),
    ("weights_sha256", pa.string()), ("deploy_info", pa.string()), ("tags", pa.string()),
    ("provenance", pa.string()), ("run_ids", pa.string()), ("created_at", pa.string()),
    # the speed of a deploy condition or of the reference (eval.speed): NaN / null where not measured;
    # float64 throughout (also counts and the shared-machine flag: 1.0 / 0.0) so that a store mixing
    # measured and unmeasured units reads back with one dtype
    ("latency_p50_ms", pa.float64()), ("latency_p95_ms", pa.float64()), ("throughput_ips", pa.float64()),
    ("speed_batch_size", pa.float64()), ("speed_device", pa.string()), ("speed_threads", pa.float64()),
    ("speed_load1", pa.float64()), ("speed_cores", pa.float64()), ("speed_shared_machine", pa.float64()),
    # adversarial units (eval.attack.summary_fields / write_worst_case)
    ("attack", pa.string()), ("attack_params", pa.string()), ("eps", pa.float64()), ("norm", pa.string()),
    ("n_clean_correct", pa.int64()), ("clean_acc", pa.float64()), ("robust_acc", pa.float64()),
    ("robust_acc_ci_low", pa.float64()), ("robust_acc_ci_high", pa.float64()),
    ("attack_robustness", pa.float64()), ("max_perturbation", pa.float64()),
    ("perturbation_within_eps", pa.bool_()), ("validity_flags", pa.string()), ("validity_raised", pa.string()),
    ("wc_group", pa.string()), ("wc_attacks", pa.int64()), ("wcar", pa.float64()), ("wc_robust_acc", pa.float64()),
    # released test sets (metrics.ood.summary_fields): the data set's format, the size of the class
    # subset the logits were restricted to (NaN: all), ImageNet-ReaL top-1 and its image count,
    # ImageNet-O AUPR (anomaly = -max softmax prob) and its positive / negative image counts; in every
    # summary, NaN where they do not apply, so float64 (also the counts) as the speed block
    ("dataset_kind", pa.string()), ("n_classes", pa.float64()), ("real_top1", pa.float64()),
    ("real_n", pa.float64()), ("ood_aupr", pa.float64()), ("ood_n_pos", pa.float64()), ("ood_n_neg", pa.float64()),
    ("ood_aupr_ci_low", pa.float64()), ("ood_aupr_ci_high", pa.float64()),   # stratified bootstrap, 95%
    # generated ImageNet-P variants (metrics.perturbation.summary_fields): flip probability (with a 95%
    # bootstrap interval over sequences) and top-5 distance over the variant's frame sequences; null
    # for every other data set
    ("flip_prob", pa.float64()), ("top5_dist", pa.float64()),
    ("flip_prob_ci_low", pa.float64()), ("flip_prob_ci_high", pa.float64()),
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


#: the compacted summaries table (under the results root), and the columns that tie each of its rows to
#: the summary file it was read from: name, inode, mtime (ns) and size when it was read
SUMMARY_INDEX = Path("index") / "summaries.parquet"
_SRC = ("_src", "_src_ino", "_src_mtime_ns", "_src_size")
#: read_summaries rebuilds the table when the store holds at least this many summary files and the
#: table is stale (a file added, rewritten or removed since it was built)
INDEX_MIN_FILES = 64


def _summary_listing(d: Path) -> dict[str, tuple[int, int, int]]:
    """name -> (inode, mtime_ns, size) of every summary file (temporary files skipped)."""
    out: dict[str, tuple[int, int, int]] = {}
    if not d.is_dir():
        return out
    with os.scandir(d) as it:
        for e in it:
            if e.name.endswith(".parquet") and not e.name.startswith("."):
                try:
                    st = e.stat()
                except FileNotFoundError:   # removed (quarantined) meanwhile
                    continue
                out[e.name] = (e.inode(), st.st_mtime_ns, st.st_size)
    return out


def _read_index(path: Path, listing: dict[str, tuple[int, int, int]]) -> tuple[pa.Table | None, set[str], bool]:
    """(the rows of the compacted summaries table whose file is unchanged, the names of those files,
    whether the table is stale: some row's file was changed or removed).  No (readable) table:
    ``(None, set(), True)``."""
    try:
        table = pq.read_table(path)
        src = table.select(list(_SRC)).to_pydict()
    except Exception:   # none yet, damaged, or from another version: rebuilt from the files
        return None, set(), True
    keep = [listing.get(n) == (i, m, z) for n, i, m, z in zip(*(src[c] for c in _SRC))]
    names = {n for n, k in zip(src["_src"], keep) if k}
    if all(keep):
        return table, names, False
    return table.filter(pa.array(keep, pa.bool_())), names, True


def _write_index(path: Path, table: pa.Table) -> None:
    """Replace the compacted summaries table (atomic; a read-only store is left without one)."""
    try:
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
    except OSError as e:
        log.debug("summaries index %s not written: %s", path, e)


def read_summaries(root: str | os.PathLike, *, index: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """Every ``summaries/*.parquet`` row under a results root, typed by :data:`SUMMARY_SCHEMA`,
    in file-name order, and the files that could not be read (each named, with what to do).

    Temporary files (names starting with ``.``: a write that a kill interrupted) are never
    summaries and are skipped.  With ``index`` the rows come from the compacted summaries table
    (:data:`SUMMARY_INDEX`) for every file it read that is unchanged since (same name, inode, mtime
    and size), and from the file itself for any summary added or rewritten after it was built, so
    the result always equals reading every file (a newer summary of a (unit, condition) wins); a
    stale table is rebuilt (atomically) once the store holds :data:`INDEX_MIN_FILES` files.  The
    files are read with one footer read each in a thread pool.  No rows gives an empty frame with
    the schema's columns."""
    from concurrent.futures import ThreadPoolExecutor

    root = Path(root).expanduser()
    d = root / "summaries"
    listing = _summary_listing(d)
    cached, known, stale = _read_index(root / SUMMARY_INDEX, listing) if index else (None, set(), True)
    files = [d / n for n in sorted(listing) if n not in known]

    def one(p: Path):
        try:
            table = pq.ParquetFile(p).read(use_threads=False)
        except Exception as e:
            return None, (f"{p}: corrupt parquet file ({type(e).__name__}); skipped: re-run the evaluation "
                          "(or `robustbench-sys results verify --repair`) to move it aside and rebuild it")
        try:
            table = _conform(table)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
            return None, (f"{p}: not a summary row of this version ({type(e).__name__}: {e}); delete it and "
                          "re-run the evaluation to rebuild it")
        ino, mtime, size = listing[p.name]
        n = table.num_rows
        return table.append_column("_src", pa.array([p.name] * n, pa.string())) \
            .append_column("_src_ino", pa.array([ino] * n, pa.int64())) \
            .append_column("_src_mtime_ns", pa.array([mtime] * n, pa.int64())) \
            .append_column("_src_size", pa.array([size] * n, pa.int64())), None

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(files)))) as ex:
        got = list(ex.map(one, files))
    tables = [t for t, _ in got if t is not None and t.num_rows]
    problems = [msg for _, msg in got if msg]
    if cached is not None and cached.num_rows:
        tables.insert(0, cached)
    if not tables:
        return SUMMARY_SCHEMA.empty_table().to_pandas(), problems
    try:
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):  # an extra column of two types
        df = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
        return df.sort_values("_src", kind="stable").drop(columns=list(_SRC)).reset_index(drop=True), problems
    if len(tables) > 1:
        table = table.take(pc.sort_indices(table, [("_src", "ascending")]))
    if index and len(listing) >= INDEX_MIN_FILES and (stale or any(t is not None for t, _ in got)):
        _write_index(root / SUMMARY_INDEX, table)
    return table.drop_columns(list(_SRC)).to_pandas(), problems
