"""The released ImageNet-P videos as evaluable data sets: decode every frame with OpenCV and write
it in the layout of ``robustbench-sys generate imagenet-p``, so ``eval --data <out>/<perturbation>``
scores every frame and the summary gets the flip probability and top-5 distance.

Released layout (Hendrycks & Dietterich 2019; H.264 videos of 224 x 224 frames)::

    <src>/<perturbation>/<wnid>/<name>.mp4        e.g. gaussian_noise_2/n01440764/ILSVRC2012_val_00000293.mp4

Written (one variant folder per perturbation folder; ``<perturbation>_<d>``: noise at difficulty d)::

    <out>/<perturbation>/<wnid>/<name>/<frame:02d>.png   every decoded frame, lossless, frame 00 first
    <out>/<perturbation>/labels.csv                      file, class_index (from the wnid), source_file
    <out>/<perturbation>/manifest.csv                    file, source_file, class_index, frame, sha256
    <out>/<perturbation>/dataset.json                    kind "imagenet-p", input size, ``sequence``

Resumable: a video whose frames are all in the manifest with matching sha256 is skipped.  A video
OpenCV cannot open or that has no frame is reported (file + reason) and skipped.

    robustbench-sys generate imagenet-p --src /data/ImageNet-P --out /data/imagenet-p-frames
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
import time
from pathlib import Path

import numpy as np

from robustbench_sys.data import GENERATED_JSON, wnid_to_index
from robustbench_sys.errors import UserError
from robustbench_sys.generate import MANIFEST, PNG, Report, read_manifest
from robustbench_sys.metrics.perturbation import is_noise
from robustbench_sys.noises.io import atomic_write_bytes
from robustbench_sys.zoo.weights import sha256_file

VIDEO_SUFFIX = ".mp4"
COLUMNS = ("file", "source_file", "class_index", "frame", "sha256")
log = logging.getLogger("robustbench_sys.imagenet_p_videos")


def is_video_root(path) -> bool:
    """True when ``path`` holds released ImageNet-P videos (``<perturbation>/<wnid>/*.mp4``)."""
    root = Path(path).expanduser()
    return root.is_dir() and next(root.glob(f"*/n[0-9]*/*{VIDEO_SUFFIX}"), None) is not None


def decode_video(path) -> list[np.ndarray]:
    """Every frame of a video as HxWx3 uint8 RGB (OpenCV); ValueError when it cannot be read."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: OpenCV cannot open this video")
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise ValueError(f"{path}: no frame decoded")
    return frames


def _split_variant(name: str) -> tuple[str, int]:
    """``gaussian_noise_2`` -> (``gaussian_noise``, 2); ``translate`` -> (``translate``, 1)."""
    m = re.fullmatch(r"(.+)_([23])", name)
    return (m.group(1), int(m.group(2))) if m else (name, 1)


def _csv(rows, columns) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([r[c] for c in columns])
    return buf.getvalue().encode()


def import_videos(src, out, *, perturbations: list[str] | None = None, limit: int | None = None) -> Report:
    """Decode the released videos under ``src`` into frame folders under ``out`` (module doc).

    Args:
        src: the released ImageNet-P root (``<perturbation>/<wnid>/<name>.mp4``).
        out: output root; one variant folder per perturbation folder.
        perturbations: perturbation folder names to import (default: all found).
        limit: only the first N videos (by path) of each perturbation.
    Returns:
        A :class:`~robustbench_sys.generate.Report` (frames written / verified, errors per video).
    """
    src, out = Path(src).expanduser().resolve(), Path(out).expanduser().resolve()
    if not is_video_root(src):
        raise UserError(f"--src {src}: no released ImageNet-P videos (<perturbation>/<wnid>/<name>.mp4) found")
    found = sorted(p.name for p in src.iterdir() if p.is_dir() and next(p.glob(f"n*/*{VIDEO_SUFFIX}"), None))
    names = list(dict.fromkeys(perturbations)) if perturbations else found
    for n in names:
        if n not in found:
            raise UserError(f"--perturbations {n}: no videos in {src / n}; found: {', '.join(found)}")
    wnids = wnid_to_index()
    report = Report(out, names)
    t0 = time.monotonic()
    for name in names:
        vdir = out / name
        vdir.mkdir(parents=True, exist_ok=True)
        videos = sorted((src / name).glob(f"n*/*{VIDEO_SUFFIX}"))[:limit]
        old, rows, size = read_manifest(vdir), [], None
        for video in videos:
            wnid, rel_src = video.parent.name, video.relative_to(src / name).as_posix()
            if wnid not in wnids:
                report.errors.append({"variant": name, "file": rel_src, "reason": f"{wnid} is not an ImageNet wnid"})
                continue
            seq = video.relative_to(src / name).with_suffix("").as_posix()
            kept = sorted((r for f, r in old.items() if f.startswith(seq + "/") and r["source_file"] == rel_src),
                          key=lambda r: int(r["frame"]))
            if kept and all((vdir / r["file"]).is_file() and sha256_file(vdir / r["file"]) == r["sha256"]
                            for r in kept):
                rows += kept
                report.verified += len(kept)
                continue
            try:
                frames = decode_video(video)
            except ValueError as e:
                report.errors.append({"variant": name, "file": rel_src, "reason": str(e)})
                log.warning("  skip video %s: %s", video, e)
                continue
            for k, img in enumerate(frames):
                if img.shape[0] != img.shape[1] or (size is not None and img.shape[0] != size):
                    raise UserError(f"{video}: frame {k} is {img.shape[1]}x{img.shape[0]}; released ImageNet-P "
                                    f"frames are square and of one size ({size or 224})")
                size = img.shape[0]
                blob = PNG.encode(img)
                rel = f"{seq}/{k:02d}{PNG.suffix}"
                atomic_write_bytes(vdir / rel, blob)
                rows.append({"file": rel, "source_file": rel_src, "class_index": wnids[wnid], "frame": k,
                             "sha256": hashlib.sha256(blob).hexdigest()})
                report.written += 1
        if not rows:
            raise UserError(f"--src {src / name}: no video could be decoded (first error: "
                            f"{report.errors[-1]['reason'] if report.errors else 'none found'})")
        if size is None:   # everything verified: the size is that of a stored frame
            from PIL import Image

            size = Image.open(vdir / rows[0]["file"]).size[1]
        atomic_write_bytes(vdir / MANIFEST, _csv(rows, COLUMNS))
        atomic_write_bytes(vdir / "labels.csv", _csv(rows, ("file", "class_index", "source_file")))
        base, difficulty = _split_variant(name)
        frames_per_video = max(int(r["frame"]) for r in rows) + 1
        meta = {"generated_by": "robustbench-sys generate imagenet-p (released videos)", "kind": "imagenet-p",
                "variant": name, "input_size": int(size), "crop_pct": 1.0, "format": "png", "complete": True,
                "n_images": len(rows), "source": {"name": src.name, "root": str(src), "videos": len(videos)},
                "sequence": {"perturbation": base, "difficulty": difficulty, "noise": is_noise(base),
                             "frames": frames_per_video, "decoded_with": "opencv"},
                "skipped": [e for e in report.errors if e["variant"] == name]}
        atomic_write_bytes(vdir / GENERATED_JSON, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    report.seconds = time.monotonic() - t0
    return report
