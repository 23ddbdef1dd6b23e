"""Write pre-processed data-set variants to disk: ImageNet-S (systematic error), ImageNet-C and
ImageNet-P (perturbation sequences).

One engine serves both generators.  A *variant* is a :class:`~robustbench_sys.pipeline.Pipeline`
(stage overrides of a base pipeline) plus a name; :func:`generate` runs every (variant, image)
through ``Pipeline.preprocess_crop`` -- decode, colour, resize, centre crop, corrupt -- and
stores the uint8 crop the model would see, so ``eval --data <out>/<variant>`` evaluates exactly
that input without resizing again.

Layout of ``<out>/<variant>/`` (a variant name may contain ``/``: ImageNet-C's
``<corruption>/<severity>``)::

    dataset.json         marks a generated variant: kind, variant, input_size, crop_pct, the
                         pipeline spec, output format, generator version, completeness, errors
    labels.csv           file, class_index, source_file (written when the variant is complete)
    manifest.csv         one row per output: source file, label, variant, decoder, resize,
                         corruption / severity, input size, library versions, sha256 of the output
    <relative path of the source image, suffix .png (or .JPEG)>
    ImageNet-P (sequence variants, :func:`imagenet_p_variants`; variant = perturbation, noise ones at
    difficulty 2 / 3 as ``<perturbation>_<d>``): one folder per source image instead, holding its
    frames in order, ``<source path without suffix>/<frame:02d>.png`` (frame 00 first; sequence
    identity = the folder), and ``dataset.json`` gains ``sequence`` (perturbation, difficulty,
    noise, frames, parameters)

Resumable: an output whose sha256 in the manifest matches the file on disk is skipped; every
output is written to a temporary file and renamed, and its manifest row is appended (one
``write`` per row) to a per-run part file under ``.manifest-parts/`` that the finished run folds
into ``manifest.csv``, so a killed run loses at most the images in flight.  Work is spread over
processes (``workers``), one task per source image (read and decoded once per decoder for all
its variants).  Unreadable source images are reported (file + reason) and skipped.

Python::

    from robustbench_sys import generate as g
    from robustbench_sys.data import load_dataset
    base = g.base_pipeline(size=224, crop_pct=0.875)
    variants = g.imagenet_s_variants(base, ["pil", "opencv"], ["pil-bilinear", "cv2-area"])
    report = g.generate(load_dataset("foolbox-demo"), variants, "/tmp/imagenet-s", kind="imagenet-s")
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import multiprocessing as mp
import os
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from dataclasses import fields as _dc_fields
from functools import partial
from pathlib import Path

import numpy as np

from robustbench_sys import noises
from robustbench_sys.data import GENERATED_JSON, Dataset
from robustbench_sys.errors import UserError
from robustbench_sys.noises.io import atomic_write_bytes
from robustbench_sys.noises.stages import get_stage, short_name
from robustbench_sys.pipeline import Pipeline
from robustbench_sys.zoo.weights import sha256_file

GENERATOR_VERSION = 1
DATASET_JSON = GENERATED_JSON   # "dataset.json"
MANIFEST = "manifest.csv"
PARTS_DIR = ".manifest-parts"
MANIFEST_COLUMNS = ("file", "source_file", "class_index", "variant", "kind", "decoder", "color", "resize",
                    "corruption", "severity", "input_size", "crop_pct", "format", "width", "height", "sha256",
                    "versions")
log = logging.getLogger("robustbench_sys.generate")

PNG_COMPRESS_LEVEL = 3   # lossless at any level; 3 is several times faster than Pillow's default 6


# ---------------------------------------------------------------------- variants and formats
@dataclass(frozen=True)
class Variant:
    """One generated data set: ``name`` (its folder under ``out``), the full pipeline, and the
    manifest descriptors (``decoder``, ``resize``, ``corruption``, ``severity``).

    A *sequence* variant (ImageNet-P) writes ``frames`` images per source image instead of one:
    ``sequence(resized, seed) -> (frames, H, W, C) uint8`` gets the image after the colour and
    resize stages but before the centre crop, and a per-image seed (from the image bytes); frame
    ``i`` of ``<dir>/<stem>.JPEG`` is stored as ``<dir>/<stem>/<i:02d>.png`` (:func:`outputs`)."""

    name: str
    pipeline: Pipeline
    fields: dict = field(default_factory=dict, hash=False)
    sequence: Callable | None = field(default=None, compare=False)
    frames: int = 1


def outputs(variant: Variant, rel: str) -> list[str]:
    """The files a variant writes for the source image whose output path is ``rel`` (its
    relative path with the output suffix): ``[rel]``, or a sequence variant's frames
    ``<rel without suffix>/<frame:02d><suffix>`` in frame order."""
    if variant.sequence is None:
        return [rel]
    p = Path(rel)
    return [(p.with_suffix("") / f"{i:02d}{p.suffix}").as_posix() for i in range(variant.frames)]


@dataclass(frozen=True)
class OutputFormat:
    """How crops are stored: ``png`` (lossless) or ``jpeg`` with a quality (Pillow, 4:2:0)."""

    kind: str = "png"
    quality: int | None = None

    @property
    def suffix(self) -> str:
        return ".png" if self.kind == "png" else ".JPEG"

    def spec(self) -> dict:
        return {"format": self.kind, **({"jpeg_quality": self.quality} if self.kind == "jpeg" else {})}

    def encode(self, img: np.ndarray) -> bytes:
        from PIL import Image

        if img.dtype != np.uint8:
            raise ValueError(f"crop is {img.dtype}, not uint8: only 8-bit crops can be stored")
        im = Image.fromarray(img[..., 0] if img.ndim == 3 and img.shape[2] == 1 else img)
        buf = io.BytesIO()
        if self.kind == "png":
            im.save(buf, "PNG", compress_level=PNG_COMPRESS_LEVEL)
        else:   # ImageNet-C's release: PIL save(quality=85, optimize=True)
            assert self.quality is not None, "a jpeg OutputFormat needs a quality"
            im.save(buf, "JPEG", quality=int(self.quality), optimize=True)
        return buf.getvalue()


PNG = OutputFormat("png")


def base_pipeline(size: int | None = None, crop_pct: float | None = None, card: str | None = None) -> Pipeline:
    """The pipeline every variant starts from: a model card's (``--model``) or torchvision's
    ImageNet evaluation (PIL decode, PIL bilinear Resize(floor(size / crop_pct)), CenterCrop(size))."""
    if card is not None:
        if size is not None or crop_pct is not None:
            raise UserError("--model sets the input size and crop_pct from the card; drop --size / --crop-pct")
        from robustbench_sys import zoo

        try:
            return Pipeline.from_card(zoo.get_card(card))
        except zoo.UnknownModel as e:
            raise UserError(f"--model: {e}") from None
    size = 224 if size is None else int(size)
    crop_pct = 0.875 if crop_pct is None else float(crop_pct)
    if size < 32 or not 0 < crop_pct <= 1:
        raise UserError(f"--size {size} / --crop-pct {crop_pct}: need size >= 32 and 0 < crop_pct <= 1")
    return Pipeline(input_size=size, crop_pct=crop_pct)


def _float_output(resize_key: str) -> bool:
    """True when a resize returns float values (torch resizes): not storable as 8-bit without change."""
    out = noises.get(resize_key)(np.zeros((8, 8, 3), np.uint8), (4, 4))
    return np.asarray(out).dtype != np.uint8


def _select(stage: str, requested: list[str] | None, option: str, exclude=None) -> list[str]:
    """Registered names of the (one-family) ``stage`` to use: the requested ones (unknown or
    unavailable: one-line UserError) or, by default, every available one (the rest listed with
    the reason)."""
    (family,) = get_stage(stage).families
    keys = noises.list_noises(f"{family}/*")
    names = [k.split("/", 1)[1] for k in keys]
    exclude = exclude or (lambda key: None)
    if requested:
        for n in requested:
            if n not in names:
                raise UserError(f"{option} {n}: unknown; valid: {', '.join(names)}")
            reason = noises.get(f"{family}/{n}").available() or exclude(f"{family}/{n}")
            if reason:
                raise UserError(f"{option} {n}: unavailable here: {reason}")
        return list(dict.fromkeys(requested))
    chosen = []
    for k, n in zip(keys, names):
        reason = noises.get(k).available() or exclude(k)
        if reason:
            log.info("  skip %s: %s", k, reason)
        else:
            chosen.append(n)
    return chosen


def imagenet_s_variants(base: Pipeline, decoders: list[str] | None = None, resizes: list[str] | None = None,
                        ) -> list[Variant]:
    """ImageNet-S (systematic error, RobustART): the decoder x resize cross product on ``base``'s
    geometry.  Variant names ``<decoder>__<resize>``."""
    decs = _select("decoder", decoders, "--decoders")
    res = _select("resize", resizes, "--resizes",
                  exclude=lambda k: "returns float32 (0..255, unrounded), which an 8-bit image cannot store "
                                    "losslessly" if _float_output(k) else None)
    if not decs or not res:
        raise UserError("generate imagenet-s: no available decoder or resize left (see the skips above)")
    return [Variant(f"{d}__{r}", base.replace(decoder=d, resize=r, corrupt=None),
                    {"decoder": d, "resize": r, "corruption": "", "severity": ""})
            for d in decs for r in res]


def imagenet_c_variants(base: Pipeline, corruptions: list[str] | None = None, severities=(1, 2, 3, 4, 5),
                        ) -> list[Variant]:
    """ImageNet-C: each corruption x severity after ``base``'s resize + centre crop (Resize(256) ->
    CenterCrop(224) by default).  Variant names ``<corruption>/<severity>`` (the released layout);
    default corruptions: the 15 benchmark ones."""
    from robustbench_sys.noises.natural import ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS, SEVERITIES

    for s in severities:
        if s not in SEVERITIES:
            raise UserError(f"--severities {s}: severities are 1..5")
    names = list(corruptions) if corruptions else list(BENCHMARK_CORRUPTIONS)
    out = []
    for c in dict.fromkeys(names):
        if c not in ALL_CORRUPTIONS:
            raise UserError(f"--corruptions {c}: unknown; valid: {', '.join(ALL_CORRUPTIONS)}")
        reason = noises.get(f"natural/{c}-1").available()
        if reason:
            if corruptions:
                raise UserError(f"--corruptions {c}: unavailable here: {reason}")
            log.info("  skip natural/%s: %s", c, reason)
            continue
        out += [Variant(f"{c}/{s}", base.replace(corrupt=f"{c}-{s}"),
                        {"decoder": short_name(base.decoder), "resize": short_name(base.resize), "corruption": c,
                         "severity": s})
                for s in severities]
    if not out:
        raise UserError("generate imagenet-c: no available corruption left (see the skips above)")
    return out


def _imagenet_p_frames(resized: np.ndarray, seed: int, *, perturbation: str, difficulty: int, crop: int
                       ) -> np.ndarray:
    from robustbench_sys.noises.natural.imagenet_p import sequence

    return sequence(resized, perturbation, difficulty, crop=crop, seed=seed)


def imagenet_p_variants(base: Pipeline, perturbations: list[str] | None = None, difficulties=(1,),
                        ) -> list[Variant]:
    """ImageNet-P: one sequence variant per perturbation (the 10 benchmark ones by default) on
    ``base``'s resize (Resize(256) by default), frames centre-cropped to its input size.  The noise
    perturbations get one variant per difficulty (``gaussian_noise``, ``gaussian_noise_2``, ...:
    the released names); the others one variant, whose difficulty is the frame step of the flip
    probability at evaluation (:mod:`robustbench_sys.metrics.perturbation`).  Layout of a variant:
    ``<source path without suffix>/<frame:02d>.png`` (frame 0 first)."""
    from robustbench_sys.noises.natural import imagenet_p as ip

    for d in difficulties:
        if d not in ip.DIFFICULTIES:
            raise UserError(f"--difficulties {d}: difficulties are 1, 2, 3")
    names = list(perturbations) if perturbations else list(ip.PERTURBATION_NAMES)
    out = []
    for n in dict.fromkeys(names):
        if n not in ip.PERTURBATIONS:
            raise UserError(f"--perturbations {n}: unknown; valid: {', '.join(ip.PERTURBATION_NAMES)}")
        p = ip.PERTURBATIONS[n]
        for d in (dict.fromkeys(difficulties) if p.noise else (1,)):
            out.append(Variant(
                ip.variant_name(n, d), base.replace(corrupt=None),
                {"decoder": short_name(base.decoder), "resize": short_name(base.resize), "corruption": n,
                 "severity": d, "perturbation": n, "difficulty": d, "noise": p.noise, "frames": p.frames,
                 "parameters": p.params, "reference": ip.REFERENCE, "versions": ip.versions()},
                sequence=partial(_imagenet_p_frames, perturbation=n, difficulty=d, crop=base.input_size),
                frames=p.frames))
    return out


# ---------------------------------------------------------------------- worker side
_STATE: dict = {}


def _init_worker(variants, fmt, out, set_cv2_threads: bool = True) -> None:
    """One intra-op thread per process: the per-image torch ops (corruptions) and OpenCV resizes
    of a 224-px crop gain nothing from more, and on a loaded machine lose several times.

    ``set_cv2_threads=False`` in forked children: calling ``cv2.setNumThreads`` there deadlocks
    (pthread_cond_destroy on the parent's pool state); the parent forks them from inside
    :func:`_single_threaded`, so they start with OpenCV serial already."""
    from robustbench_sys.alloc import tune_allocator
    from robustbench_sys.procs import die_with_parent
    from robustbench_sys.threads import apply, plan_threads

    die_with_parent()   # a killed generate leaves no worker writing into --out
    tune_allocator()
    _STATE.update(variants=variants, fmt=fmt, out=Path(out))
    apply(plan_threads("preprocess"), forked=not set_cv2_threads)   # robustbench_sys.threads: one thread


@contextmanager
def _single_threaded():
    """torch and OpenCV at one thread in this process for the block, restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    try:
        import cv2
    except ImportError:
        cv2 = None
    cv2_threads = cv2.getNumThreads() if cv2 is not None else None
    torch.set_num_threads(1)
    if cv2 is not None:
        cv2.setNumThreads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if cv2 is not None:
            cv2.setNumThreads(cv2_threads)



def _reason(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:300]


def _work(task):
    """One source image -> its pending variants.  Returns ``[(variant index, out rel, sha256,
    width, height, error)]``; an error leaves the other fields empty."""
    src_path, out_rel, todo = task
    variants, fmt, out = _STATE["variants"], _STATE["fmt"], _STATE["out"]
    try:
        data = Path(src_path).read_bytes()
    except OSError as e:
        return [(vi, out_rel, "", 0, 0, _reason(e)) for vi in todo]
    decoded: dict = {}
    results = []
    for vi in todo:
        pipe = variants[vi].pipeline
        try:
            if pipe.decoder not in decoded:
                try:
                    decoded[pipe.decoder] = pipe.decode(data)
                except Exception as e:
                    decoded[pipe.decoder] = e
            rgb = decoded[pipe.decoder]
            if isinstance(rgb, Exception):
                raise rgb
            v = variants[vi]
            if v.sequence is None:
                imgs = [pipe.to_crop(rgb, pipe.image_rng(data))]
            else:
                imgs = list(v.sequence(_resized(pipe, rgb), int.from_bytes(hashlib.sha1(data).digest()[:8], "little")))
                if len(imgs) != v.frames:
                    raise ValueError(f"sequence of {v.name} returned {len(imgs)} frames, not {v.frames}")
            done = []
            for rel, img in zip(outputs(v, out_rel), imgs):
                blob = fmt.encode(img)
                target = out / v.name / rel
                if not _inside(out, target):   # checked by generate(); again here against a symlink made since
                    raise OSError(f"output {os.path.realpath(target)} is outside --out {out}; not written")
                atomic_write_bytes(target, blob)
                done.append((vi, rel, hashlib.sha256(blob).hexdigest(), img.shape[1], img.shape[0], ""))
            results += done
        except Exception as e:
            results.append((vi, outputs(variants[vi], out_rel)[0], "", 0, 0, _reason(e)))
    return results


def _resized(pipe: Pipeline, rgb: np.ndarray) -> np.ndarray:
    """``rgb`` through ``pipe``'s colour and resize stages, without the centre crop and the
    corruption (what a sequence variant perturbs); a float resize output is rounded to uint8."""
    img = _Uncropped(**{f.name: getattr(pipe, f.name) for f in _dc_fields(pipe)}).replace(corrupt=None).to_crop(rgb)
    return img if img.dtype == np.uint8 else np.clip(np.rint(img), 0, 255).astype(np.uint8)


class _Uncropped(Pipeline):
    """A pipeline whose centre crop keeps the whole image (see :func:`_resized`)."""

    def center_crop(self, img: np.ndarray) -> np.ndarray:
        return img


# ---------------------------------------------------------------------- manifest
def _csv_line(values) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue().encode()


def read_manifest(vdir: Path) -> dict[str, dict]:
    """``file -> row`` from ``manifest.csv`` and any part files of interrupted runs (later rows
    win; a torn last line of a killed run is ignored)."""
    rows: dict[str, dict] = {}
    paths = [vdir / MANIFEST] + sorted((vdir / PARTS_DIR).glob("part-*.csv"), key=lambda p: p.stat().st_mtime)
    for p in paths:
        if not p.is_file():
            continue
        with open(p, newline="") as f:
            for r in csv.DictReader(f):
                if None in r.values() or None in r or len(r.get("sha256") or "") != 64:
                    continue
                rows[r["file"]] = r
    return rows


class _Parts:
    """Append-only manifest part file per (run, variant): one ``write`` per row."""

    def __init__(self, out: Path, run_id: str):
        self.out, self.run_id = out, run_id
        self.started: set[str] = set()

    def append(self, variant: str, row: dict) -> None:
        d = self.out / variant / PARTS_DIR
        path = d / f"part-{self.run_id}.csv"
        data = _csv_line([row[c] for c in MANIFEST_COLUMNS])
        if variant not in self.started:
            d.mkdir(parents=True, exist_ok=True)
            data = _csv_line(MANIFEST_COLUMNS) + data
            self.started.add(variant)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------- the engine
@dataclass
class Report:
    out: Path
    variants: list[str]
    written: int = 0
    verified: int = 0
    errors: list[dict] = field(default_factory=list)   # variant, file, reason
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else float("nan")


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))



def _versions(pipe: Pipeline, fmt: OutputFormat) -> dict:
    from importlib import metadata

    v = dict(pipe.noise_versions())
    for pkg in ("numpy", "Pillow"):   # the PNG / JPEG encoder and the arrays
        try:
            v.setdefault(pkg, metadata.version(pkg))
        except metadata.PackageNotFoundError:
            pass
    return v


def _dataset_json(kind: str, variant: Variant, fmt: OutputFormat, dataset: Dataset, **extra) -> dict:
    p = variant.pipeline
    return {"generated_by": "robustbench-sys generate", "kind": kind, "generator_version": GENERATOR_VERSION,
            "variant": variant.name, "input_size": p.input_size, "crop_pct": p.crop_pct,
            "pipeline": p.spec(), "pipeline_text": p.describe(), **fmt.spec(),
            "source": {"name": dataset.name, "root": str(dataset.root), "fingerprint": dataset.fingerprint,
                       "n_images": len(dataset)},
            **({"sequence": {k: v for k, v in variant.fields.items() if k != "versions"}}
               if variant.sequence is not None else {}), **extra}


def _check_existing(vdir: Path, kind: str, variant: Variant, fmt: OutputFormat) -> None:
    path = vdir / DATASET_JSON
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({e}); delete it (or the folder) and re-run") from None
    mine = {"kind": kind, "pipeline": variant.pipeline.spec(), "format": fmt.kind,
            "jpeg_quality": fmt.quality if fmt.kind == "jpeg" else None}
    if {k: old.get(k) for k in mine} != mine:
        raise UserError(f"--out {vdir.parent if '/' not in variant.name else vdir}: {vdir} was generated with "
                        f"another pipeline or format ({old.get('pipeline_text')}, {old.get('format')}); use a "
                        "new --out or delete that folder")


def _inside(top: Path, path: Path) -> bool:
    """True when ``path`` resolves (``..`` and symlinks followed) strictly below ``top``."""
    real, root = os.path.realpath(path), os.path.realpath(top)
    return real.startswith(root.rstrip(os.sep) + os.sep)


def _write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def generate(dataset: Dataset, variants: list[Variant], out, *, kind: str, fmt: OutputFormat = PNG,
             workers: int | None = None, progress: bool = True) -> Report:
    """Write every (variant, image) crop under ``out/<variant>/``; resumable (see the module doc).

    Args:
        dataset: the source images (:func:`robustbench_sys.data.load_dataset`).
        variants: from :func:`imagenet_s_variants` / :func:`imagenet_c_variants`, or your own.
        out: output root; each variant is a data set ``eval --data`` reads directly.
        kind: recorded in ``dataset.json`` (``imagenet-s``, ``imagenet-c``).
        fmt: :data:`PNG` (lossless) or ``OutputFormat("jpeg", 85)``.
        workers: processes (default ``min(2, cpus)``); 1 runs in this process.
    Returns:
        A :class:`Report` (images written, verified-and-skipped, errors with file + reason).
    """
    if dataset.preprocessed_size is not None:
        raise UserError(f"--src {dataset.root}: already a generated variant; give the original images")
    if not variants:
        raise UserError("generate: no variants to write")
    if len(dataset) == 0:
        raise UserError(f"--src {dataset.root}: no images found")
    out = Path(out).expanduser().resolve()
    rels: dict[str, str] = {}   # every output path (of any variant) -> its source file
    for s in dataset.samples:
        base = Path(s.file).with_suffix(fmt.suffix).as_posix()
        for rel in dict.fromkeys(o for v in variants for o in outputs(v, base)):
            if rels.get(rel, s.file) != s.file:
                raise UserError(f"--src {dataset.root}: {rels[rel]} and {s.file} would both be written as {rel}")
            rels[rel] = s.file
    for v in variants:   # every output (its resolved target: '..', absolute paths, symlinks) stays inside --out
        vdir = out / v.name
        if not _inside(out, vdir):
            raise UserError(f"--out {out}: variant {v.name!r} would be written to {os.path.realpath(vdir)}, outside "
                            "it; use a variant name without '..' and no symlink leading out of --out")
        for rel, src_file in rels.items():
            if not _inside(vdir, vdir / rel):
                raise UserError(f"--src {dataset.root}: image {src_file!r} would be written to "
                                f"{os.path.realpath(vdir / rel)}, outside --out {out}; list source images by paths "
                                "inside the data folder (no '..', absolute paths or symlinks leading out)")
    workers = default_workers() if workers is None else max(1, int(workers))
    from robustbench_sys.alloc import tune_allocator

    tune_allocator()   # before the pool starts: forked / spawned workers inherit it
    report = Report(out, [v.name for v in variants])
    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    parts = _Parts(out, run_id)
    labels = {s.file: s.label for s in dataset.samples}
    t0 = time.monotonic()

    # plan: verified outputs are kept, the rest is (re)written
    kept: list[dict[str, dict]] = []
    pending: dict[int, list[int]] = {}
    for vi, v in enumerate(variants):
        vdir = out / v.name
        _check_existing(vdir, kind, v, fmt)
        vdir.mkdir(parents=True, exist_ok=True)
        _write_json(vdir / DATASET_JSON, _dataset_json(kind, v, fmt, dataset, complete=False))
        old, ok = read_manifest(vdir), {}
        for si, s in enumerate(dataset.samples):
            outs = outputs(v, Path(s.file).with_suffix(fmt.suffix).as_posix())
            good = {rel: old[rel] for rel in outs if rel in old and old[rel]["source_file"] == s.file
                    and (vdir / rel).is_file() and sha256_file(vdir / rel) == old[rel]["sha256"]}
            if len(good) == len(outs):   # a sequence is kept whole or rewritten whole
                ok.update(good)
            else:
                pending.setdefault(si, []).append(vi)
        kept.append(ok)
        report.verified += len(ok)
    versions = [json.dumps({**_versions(v.pipeline, fmt), **v.fields.get("versions", {})}, sort_keys=True)
                for v in variants]
    tasks = [(str(dataset.samples[si].path), Path(dataset.samples[si].file).with_suffix(fmt.suffix).as_posix(), vis)
             for si, vis in sorted(pending.items())]
    total = sum(len(t[2]) for t in tasks)
    if report.verified:
        log.info("  resume: %d output(s) verified by sha256 and kept; %d to write", report.verified, total)

    new: list[dict[str, dict]] = [{} for _ in variants]
    bar = None
    if progress and total:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", dynamic_ncols=True, desc=f"generate {kind}", file=sys.stderr)

    def collect(results) -> None:
        for vi, rel, sha, w, h, err in results:
            v, src = variants[vi], rels[rel]
            if err:
                report.errors.append({"variant": v.name, "file": src, "reason": err})
                log.warning("  skip image %s (%s): %s", dataset.root / src, v.name, err)
            else:
                p = v.pipeline
                row = {"file": rel, "source_file": src, "class_index": labels[src], "variant": v.name,
                       "kind": kind, "decoder": short_name(p.decoder), "color": p.color, "resize": short_name(p.resize),
                       "corruption": v.fields.get("corruption", ""), "severity": v.fields.get("severity", ""),
                       "input_size": p.input_size, "crop_pct": p.crop_pct, "format": fmt.kind,
                       "width": w, "height": h, "sha256": sha, "versions": versions[vi]}
                parts.append(v.name, row)
                new[vi][rel] = row
                report.written += 1
            if bar is not None:
                bar.update(1)

    try:
        if workers == 1 or len(tasks) <= 1:
            with _single_threaded():
                _STATE.update(variants=variants, fmt=fmt, out=Path(out))
                for t in tasks:
                    collect(_work(t))
        elif tasks:
            # fork (cheap: no re-import of torch per worker) from a parent whose OpenCV and torch
            # pools are at one thread, so the children never touch them; spawn where fork is absent
            fork = "fork" in mp.get_all_start_methods()
            with _single_threaded(), ProcessPoolExecutor(
                    workers, mp_context=mp.get_context("fork" if fork else "spawn"), initializer=_init_worker,
                    initargs=(variants, fmt, out, not fork)) as pool:
                for fut in as_completed([pool.submit(_work, t) for t in tasks]):
                    collect(fut.result())
    finally:
        if bar is not None:
            bar.close()
    report.seconds = time.monotonic() - t0

    # fold each variant's parts into manifest.csv, write labels.csv, mark it complete
    for vi, v in enumerate(variants):
        vdir = out / v.name
        rows = {**kept[vi], **new[vi]}
        ordered = [rows[r] for r in sorted(rows)]
        atomic_write_bytes(vdir / MANIFEST, _csv_line(MANIFEST_COLUMNS) +
                      b"".join(_csv_line([r[c] for c in MANIFEST_COLUMNS]) for r in ordered))
        atomic_write_bytes(vdir / "labels.csv", _csv_line(("file", "class_index", "source_file")) +
                      b"".join(_csv_line((r["file"], r["class_index"], r["source_file"])) for r in ordered))
        pdir = vdir / PARTS_DIR
        if pdir.is_dir():
            for p in pdir.glob("part-*.csv"):
                p.unlink()
            pdir.rmdir()
        errs = [e for e in report.errors if e["variant"] == v.name]
        _write_json(vdir / DATASET_JSON, _dataset_json(
            kind, v, fmt, dataset, complete=True, n_images=len(ordered),
            skipped=[{"file": e["file"], "reason": e["reason"]} for e in errs]))
    return report

