"""Released corruption benchmarks read as published: ImageNet-C, ImageNet-C-bar, ImageNet-3DCC.

A released root is laid out ``<root>/<corruption>/<severity 1-5>/<wnid>/*.JPEG`` and its images
are already the 224x224 centre crops the corruptions were applied to.  Evaluating them through a
model's Resize(256) -> CenterCrop(224) again is the bug RobustBench fixed (its issue 59), so here
every (corruption, severity) folder is a :class:`~robustbench_sys.data.Dataset` with
``preprocessed_size`` set and is evaluated like a ``robustbench-sys generate`` variant: PIL
decode, no resize, no crop, the model's mean / std (:func:`~robustbench_sys.eval.plan.reference_pipeline`).

Which release a root is follows from its folder names (kept as data, with their sources, in
``data/released_corruptions.csv``: the 15 benchmark + 4 extra ImageNet-C corruptions, the 10 of
ImageNet-C-bar, the 12 of ImageNet-3DCC); ``--data-format`` names it explicitly.  An unknown
folder, a missing or extra severity, a severity folder without wnid sub-folders, or corruptions
of two releases in one root are refused with one line naming the path.

Evaluation (:func:`evaluate_released`, reached through ``robustbench-sys eval --data ROOT`` and
``evaluate(data=ROOT)``): one unit per (model, corruption, severity), condition
``<release>/<corruption>-<severity>`` in family ``natural``, all parts under one data-set name
(the root's folder name) so ``results show --by natural`` gives CE / mCE / relative mCE as for
the generated set.  Choices the user must make, never defaulted silently:

* the clean reference: ``--clean-data DIR`` (the ImageNet validation folder the release was
  made from, ``<wnid>/<file>`` names matching the release's): it is evaluated with the model's
  own pipeline as the reference unit, every corruption unit is paired with it by file (ΔACC,
  flips) and its accuracy is the clean error of relative mCE; or ``--clean-data none``: corruption
  errors, CE and mCE only (ΔACC, flips, clean error and relative mCE are left empty).
* a model whose input size differs from the release's crops: ``--released-input resize`` (the
  crop resized to the input size with the model's own resize method) or ``--released-input pad``
  (centred on a black canvas of the input size; only for a larger input).  The choice is part of
  the unit's pipeline spec (``released_input``) and so of its id.

Python::

    from robustbench_sys import evaluate
    evaluate("mobilenet_v2", data="/data/ImageNet-C", clean_data="/data/imagenet/val")
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd

from robustbench_sys.data import GENERATED_JSON, IMAGE_EXTS, Dataset, Sample, wnid_to_index
from robustbench_sys.errors import UserError
from robustbench_sys.pipeline import Pipeline, ReleasedPipeline

log = logging.getLogger("robustbench_sys.eval")

#: the corruption names of each release, with their sources (package data)
CORRUPTIONS_CSV = resources.files("robustbench_sys.labels") / "released_corruptions.csv"
RELEASES = ("imagenet-c", "imagenet-c-bar", "imagenet-3dcc")
SEVERITIES = (1, 2, 3, 4, 5)
#: how a release's crops meet a model of another input size (``--released-input``)
INPUT_CHOICES = ("resize", "pad")
#: ``--clean-data none``: no clean reference (errors, CE and mCE only)
NO_CLEAN = "none"
FAMILY = "natural"
SUITE_VERSION = 1


@lru_cache(maxsize=1)
def corruption_table() -> tuple[dict, ...]:
    """Rows of ``data/released_corruptions.csv``: release, corruption, role, source."""
    return tuple(csv.DictReader(io.StringIO(CORRUPTIONS_CSV.read_text(encoding="utf-8"), newline="")))


def corruptions(release: str, role: str | None = None) -> tuple[str, ...]:
    """The corruption folder names of ``release`` (``role``: only ``benchmark`` or ``extra`` ones)."""
    if release not in RELEASES:
        raise UserError(f"--data-format {release}: not a released corruption set; one of {', '.join(RELEASES)}")
    return tuple(r["corruption"] for r in corruption_table()
                 if r["release"] == release and (role is None or r["role"] == role))


def release_of(name: str) -> tuple[str, ...]:
    """The releases that have a corruption folder called ``name``."""
    return tuple(r["release"] for r in corruption_table() if r["corruption"] == name)


# ---------------------------------------------------------------------- reading a released root
@dataclass(frozen=True)
class Part:
    """One ``<corruption>/<severity>`` folder as a data set of already-cropped images."""

    corruption: str
    severity: int
    dataset: Dataset

    @property
    def key(self) -> str:
        return f"{self.corruption}-{self.severity}"


@dataclass(frozen=True)
class Released:
    """A released corruption root: its release, crop size and (corruption, severity) parts."""

    release: str
    root: Path
    size: int
    parts: tuple[Part, ...]

    @property
    def name(self) -> str:
        """The data-set name every part is stored under (natural tables group by it)."""
        return self.parts[0].dataset.name if self.parts else self.root.name

    def limit(self, n: int | None) -> Released:
        return dataclasses.replace(self, parts=tuple(dataclasses.replace(p, dataset=p.dataset.limit(n))
                                                     for p in self.parts))

    def listing(self) -> list[tuple[str, int, Dataset]]:
        """``(corruption, severity, Dataset)`` per part, in folder order."""
        return [(p.corruption, p.severity, p.dataset) for p in self.parts]


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def looks_released(path: Path) -> bool:
    """True when ``path`` is a folder whose sub-folders include a released corruption name with
    severity sub-folders, and it is no labels.csv folder nor a ``robustbench-sys generate`` output
    (whose variant folders carry ``dataset.json`` and are read by :func:`robustbench_sys.data.load_dataset`)."""
    if not path.is_dir() or (path / GENERATED_JSON).is_file() or (path / "labels.csv").is_file():
        return False
    found = False
    for d in _subdirs(path):
        sevs = [s for s in _subdirs(d) if s.name in {str(k) for k in SEVERITIES}]
        if any((s / GENERATED_JSON).is_file() for s in sevs):
            return False
        found = found or bool(release_of(d.name) and sevs)
    return found


def open_released(spec: str | os.PathLike, release: str | None = None) -> Released:
    """Read a released root (layout in the module doc); ``release`` names it (``--data-format``),
    else it follows from the folder names.  One-line :class:`UserError` naming the path otherwise."""
    root = Path(spec).expanduser()
    if not root.is_dir():
        raise UserError(f"--data {spec}: no such directory; give the root of a released {release or 'ImageNet-C'} "
                        "folder (<corruption>/<severity>/<wnid>/*.JPEG)")
    root = root.resolve()
    dirs = _subdirs(root)
    if not dirs:
        raise UserError(f"--data {root}: no corruption folders; expected <corruption>/<severity 1-5>/<wnid>/*.JPEG")
    if release is not None:
        known = corruptions(release)
        for d in dirs:
            if d.name not in known:
                other = release_of(d.name)
                why = f"a corruption of {', '.join(other)}" if other else "no known corruption"
                raise UserError(f"--data {root}: folder {d} is {why}, not one of the {len(known)} {release} "
                                f"corruptions ({', '.join(known)}); remove it or give the right --data-format")
    else:
        for d in dirs:
            if not release_of(d.name):
                raise UserError(f"--data {root}: folder {d} is no corruption of "
                                f"{', '.join(RELEASES)} (names in data/released_corruptions.csv); remove or "
                                "rename it, or give --data-format")
        common = [r for r in RELEASES if all(r in release_of(d.name) for d in dirs)]
        if not common:
            by = {d.name: release_of(d.name)[0] for d in dirs}
            a = dirs[0].name
            b = next(n for n in by if by[n] != by[a])
            raise UserError(f"--data {root}: mixes corruptions of {by[a]} ({root / a}) and {by[b]} ({root / b}); "
                            "keep one release per root")
        release = common[0]
    wnids = wnid_to_index()
    name = root.name
    parts: list[Part] = []
    size: int | None = None
    for d in dirs:
        sev = {s.name: s for s in _subdirs(d)}
        extra = sorted(set(sev) - {str(k) for k in SEVERITIES})
        if extra:
            raise UserError(f"--data {root}: {d / extra[0]} is no severity folder (expected 1..5 only)")
        missing = [k for k in SEVERITIES if str(k) not in sev]
        if missing:
            raise UserError(f"--data {root}: {d} lacks severity {', '.join(map(str, missing))} "
                            f"(missing folder {d / str(missing[0])}); every corruption needs severities 1..5")
        for k in SEVERITIES:
            sdir = sev[str(k)]
            classes = _subdirs(sdir)
            loose = sorted(f for f in sdir.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
            if loose:
                raise UserError(f"--data {root}: {loose[0]} lies directly in {sdir}; released images sit in "
                                f"{sdir}/<wnid>/ (ImageNet class folders)")
            bad = [c for c in classes if c.name not in wnids]
            if bad or not classes:
                what = f"{bad[0]} is not an ImageNet wnid folder" if bad else "no <wnid>/ sub-folders"
                raise UserError(f"--data {root}: {sdir}: {what}; expected {sdir}/<wnid>/*.JPEG")
            samples = [Sample(f"{c.name}/{f.name}", f, wnids[c.name]) for c in classes
                       for f in sorted(c.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_EXTS]
            if not samples:
                raise UserError(f"--data {root}: {sdir} holds no images under its wnid folders")
            outside = [s for s in samples if not _inside(root, s.path)]
            if outside:
                raise UserError(f"--data {root}: {outside[0].path} resolves to {os.path.realpath(outside[0].path)}, "
                                "outside the released folder; a symlink must stay inside it")
            w = _crop_size(samples[0].path)
            if size is None:
                size = w
            elif w != size:
                raise UserError(f"--data {root}: {samples[0].path} is a {w}px crop but "
                                f"{parts[0].dataset.samples[0].path} a {size}px one; one crop size per root")
            parts.append(Part(d.name, k, Dataset(name, sdir, tuple(samples), preprocessed_size=w,
                                                 kind=f"released:{release}")))
    assert size is not None
    return Released(release, root, size, tuple(parts))


def _inside(root: Path, path: Path) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(root)
    return real.startswith(top.rstrip(os.sep) + os.sep)


def _crop_size(path: Path) -> int:
    """The side of a released (square) crop, from the image header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, UnidentifiedImageError) as e:
        raise UserError(f"--data: {path} is not a readable image ({e})") from None
    if w != h:
        raise UserError(f"--data: {path} is {w}x{h}, not a square crop as released data sets store them; "
                        "evaluate that folder as an ordinary image folder instead")
    return w


def resolve(data, data_format: str | None) -> Released | None:
    """The released root ``data`` names, or None when it is no released root (and no release
    ``data_format`` was given): the hook of :func:`robustbench_sys.eval.api.evaluate`."""
    if isinstance(data, Dataset) or str(data) in ("foolbox-demo", "mnist-test"):
        if data_format in RELEASES:
            raise UserError(f"--data-format {data_format}: give the released folder's root as --data")
        return None
    if data_format not in (None, *RELEASES):
        return None
    path = Path(data).expanduser()
    inner = _inner_part(path.resolve()) if path.is_dir() else None
    if inner is not None:   # <root>/<corruption>[/<severity>]: that part of the root, never resized again
        root, corruption, severity = inner
        rel = open_released(root, data_format)
        keep = tuple(p for p in rel.parts if p.corruption == corruption and severity in (None, p.severity))
        return dataclasses.replace(rel, parts=keep)
    if data_format is not None or looks_released(path):
        return open_released(data, data_format)
    return None


def _inner_part(path: Path) -> tuple[Path, str, int | None] | None:
    """``(root, corruption, severity or None)`` when ``path`` is a corruption or severity folder
    inside a released root."""
    sev = {str(k) for k in SEVERITIES}
    if path.name in sev and release_of(path.parent.name) and looks_released(path.parent.parent):
        return path.parent.parent, path.parent.name, int(path.name)
    if release_of(path.name) and any(d.name in sev for d in _subdirs(path)) and looks_released(path.parent):
        return path.parent, path.name, None
    return None


# ---------------------------------------------------------------------- pipeline
def part_pipeline(card, rel: Released, part: Part, released_input: str | None) -> ReleasedPipeline:
    """The pipeline evaluating ``part`` with ``card``; the size choice is checked (one line)."""
    from robustbench_sys.eval.plan import reference_pipeline

    size = card.preprocess.input_size
    mode = None if size == rel.size else released_input
    if size != rel.size and released_input is None:
        raise UserError(f"--model {card.name} takes {size}px input but --data {rel.root} holds {rel.size}px "
                        f"{rel.release} crops; choose --released-input resize (resize the crops to {size}px with "
                        f"the model's {card.preprocess.resize}) or --released-input pad (centre them on a black "
                        f"{size}px canvas)")
    if mode == "pad" and size < rel.size:
        raise UserError(f"--released-input pad: --model {card.name} takes {size}px input, smaller than the "
                        f"{rel.size}px crops of {rel.root}; use --released-input resize")
    base = reference_pipeline(card, part.dataset)   # decoder/pil, resize none: the crop as released
    if mode == "resize":
        base = Pipeline.from_card(card).replace(decoder="decoder/pil", crop_pct=1.0)
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(Pipeline)}
    return ReleasedPipeline(**fields, released=rel.release, released_corrupt=part.key, released_input=mode)


# ---------------------------------------------------------------------- evaluation
def add_released_options(p) -> None:
    """``eval``'s ``--data-format``, ``--clean-data`` and ``--released-input``."""
    from robustbench_sys.data import FORMATS

    p.add_argument("--data-format", default=None,
                   help=f"name the kind of --data explicitly: {', '.join(RELEASES)} (a released corruption root, "
                        "<corruption>/<severity>/<wnid>/*.JPEG: one unit per corruption and severity) or one "
                        f"folder: {', '.join(FORMATS)}; recognised from the folder without it")
    p.add_argument("--clean-data", default=None,
                   help="with a released corruption root as --data: the clean validation images it was made from "
                        f"(reference: clean error, ΔACC, relative mCE), or '{NO_CLEAN}' (errors, CE and mCE only); "
                        "required there")
    p.add_argument("--released-input", choices=INPUT_CHOICES, default=None,
                   help="with a released root and a model whose input size differs from its crops: resize the "
                        "crops to the input size (the model's resize method) or centre-pad them on black; required "
                        "then")


def check_options(released_input: str | None) -> None:
    if released_input is not None and released_input not in INPUT_CHOICES:
        raise UserError(f"--released-input {released_input}: choose {' or '.join(INPUT_CHOICES)}")


def refuse_options(data, clean_data, released_input) -> None:
    """The released-only options on another kind of ``--data``: one line."""
    for opt, v in (("--clean-data", clean_data), ("--released-input", released_input)):
        if v is not None:
            raise UserError(f"{opt}: applies only to a released ImageNet-C / -C-bar / -3DCC root as --data "
                            f"(<corruption>/<severity>/<wnid>/*.JPEG); {data} is none")


def _units(card, sha: str, rel: Released, released_input: str | None, device: str):
    from robustbench_sys.eval.plan import Unit, check_benchmark, unit_id
    from robustbench_sys.suites import Condition

    check_benchmark(card, rel.parts[0].dataset)
    units = []
    for part in rel.parts:
        pipe = part_pipeline(card, rel, part, released_input)
        cond = Condition(f"{rel.release}/{part.key}", FAMILY, rel.release, SUITE_VERSION,
                         {"released": f"{rel.release}/{part.corruption}/{part.severity}"})
        units.append(Unit(unit_id(card.name, sha, part.dataset, pipe, None, device), card, sha, cond, pipe,
                          part.dataset, device))
    return units


def _clean_dataset(clean_data, rel: Released, limit: int | None) -> Dataset | None:
    from robustbench_sys.data import load_dataset

    if clean_data is None:
        raise UserError(f"--data {rel.root} is a released {rel.release} folder: name the clean validation images "
                        "it was made from with --clean-data DIR (clean error, ΔACC and relative mCE), or give "
                        f"--clean-data {NO_CLEAN} for corruption errors, CE and mCE only")
    if isinstance(clean_data, str) and clean_data == NO_CLEAN:
        return None
    ds = (clean_data if isinstance(clean_data, Dataset) else load_dataset(clean_data)).limit(limit)
    if len(ds) == 0:
        raise UserError(f"--clean-data {clean_data}: no images found")
    files = {s.file for s in ds.samples}
    probe = rel.parts[0].dataset.samples
    if not any(s.file in files for s in probe):
        raise UserError(f"--clean-data {clean_data}: none of its files matches the released images' names (e.g. "
                        f"{probe[0].file!r} vs {ds.samples[0].file!r}); give the ImageNet validation folder "
                        "(<wnid>/<file>) the release was made from, or --clean-data none")
    n = sum(s.file in files for s in probe)
    if n < len(probe):
        log.info("  --clean-data: %d of %d released images of %s have a clean counterpart (ΔACC over those)",
                 n, len(probe), rel.parts[0].key)
    return ds


def _no_reference(row: dict) -> dict:
    """A summary row of a unit run without a clean reference: the paired fields left empty."""
    nan = float("nan")
    row.update(ref_top1=nan, delta_acc=nan, delta_ci_low=nan, delta_ci_high=nan, mcnemar_p=nan, n_paired=0,
               n_lost=0, n_gained=0, flip_rate=nan, reference_pipeline="", ref_ece=nan, ref_nll=nan)
    return row


def _run_alone(runner, units, calib) -> list:
    """Units without a reference, in this process: each run, then summarised without pairing."""
    from robustbench_sys.eval.plan import Skip
    from robustbench_sys.eval.scoring import summarise

    models: dict = {}
    finished = []
    for unit in units:
        if not runner.complete(unit):
            reason = runner.run_pending(unit, calib, models) if runner.pending(unit) else None
            if reason:
                runner.skip(Skip(unit.card.name, unit.condition.name, reason))
                continue
            with runner.store.unit_lock(unit.id):
                info = runner.deploy_info.get(unit.id) or runner.store.unit_or_empty(unit.id).get("deploy_info", {})
                row = summarise(runner.store, unit, unit, run_id=runner.run_id, deploy_info=info)
                runner.store.write_summary(unit.id, _no_reference(row))
        finished.append(unit)
    return finished


def evaluate_released(rel: Released, cards: list, suite_list: Sequence, *, clean_data, released_input: str | None,
                      limit: int | None, out, batch_size: int, workers: int | None, progress: bool, calibration,
                      scheduler, device: str, plan: bool, weights: Callable) -> pd.DataFrame:
    """:func:`robustbench_sys.eval.api.evaluate` on a released root (see the module doc); ``weights``
    gives a card's ``(path, sha256)`` with evaluate's one-line error when they are unavailable."""
    from robustbench_sys.eval.deploy import Calibration
    from robustbench_sys.eval.plan import plan_units
    from robustbench_sys.eval.runner import Runner, run_local
    from robustbench_sys.paths import default_results_dir
    from robustbench_sys.suites import resolve as resolve_suites

    check_options(released_input)
    conditions = resolve_suites(list(suite_list))
    other = [c.name for c in conditions if not c.is_clean]
    if other:
        raise UserError(f"--suite: with a released {rel.release} folder as --data its corruptions are the conditions; "
                        f"drop {other[0]} ({len(other)} such) and evaluate other suites on the clean data in a "
                        "separate run")
    rel = rel.limit(limit)
    clean = _clean_dataset(clean_data, rel, limit)
    if clean is None and scheduler is not None:
        raise UserError("--scheduler: runs with --clean-data none run in this process; drop --scheduler or give "
                        "--clean-data DIR")
    plans, skips = [], []
    for card in cards:
        _, sha = weights(card)
        if card.library == "onnx":
            from robustbench_sys.devices import check_onnx_device

            check_onnx_device(card.name, device)
        units = _units(card, sha, rel, released_input, device)
        if clean is not None:
            ref, sk = plan_units(card, sha, conditions[:1], clean, device, speed=False)
            skips += sk
            units = ref + units
        plans.append(units)
    first = clean if clean is not None else rel.parts[0].dataset
    if plan:
        from robustbench_sys.eval.estimate import build_plan
        from robustbench_sys.eval.loop import preprocess_workers

        return build_plan(out or default_results_dir(), plans, skips, first, batch_size=batch_size,
                          workers=preprocess_workers() if workers is None else workers, scheduler=scheduler).table()
    runner = Runner(out or default_results_dir(), batch_size=batch_size, workers=workers, progress=progress)
    for s in skips:
        runner.skip(s)
    calib = Calibration(calibration, first, batch_size)
    if clean is None:
        finished = [_run_alone(runner, units, calib) for units in plans]
    elif scheduler is None:
        finished = [run_local(runner, units, calib) for units in plans]
    else:
        from robustbench_sys.eval.executors import run_dask

        finished = run_dask(runner, plans, scheduler, calibration=calibration, batch_size=batch_size)
    s = runner.store.summaries()
    keys = {(u.id, u.condition.name) for units in finished for u in units}
    out_df = s[[k in keys for k in zip(s.unit_id, s.condition)]].reset_index(drop=True) if len(s) else s
    out_df.attrs["skipped"] = runner.skipped
    out_df.attrs["out"] = str(runner.store.root)
    return out_df
