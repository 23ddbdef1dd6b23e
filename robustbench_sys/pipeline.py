"""One explicit object for bytes -> decode -> colour -> resize/crop [-> corrupt] -> tensor/normalise -> model.

A :class:`Pipeline` is built from a model card (the model's own "training system", the
reference) and a system-noise condition swaps one or more stages with
:meth:`Pipeline.replace`.  Its stage fields are those of the stage table
(:mod:`robustbench_sys.noises.stages`) and hold full noise keys (``decoder/pil``, ``resize/cv2-area``,
``precision/bf16``), so the whole pipeline is a small, hashable, JSON-serialisable spec that is
stored with every result; :meth:`Pipeline.from_spec` is the inverse of :meth:`Pipeline.spec`.
The image half (decoder, colour, resize, geometry, mean / std) is :class:`zoo.Preprocess`, the
model card's preprocessing.

Geometry is fixed by the card and shared by every resize implementation: the short side
goes to ``floor(input_size / crop_pct)`` (timm's rule; 256 for 224 / 0.875), the long side
to ``int(short * long / short_orig)`` (torchvision's rule), then a centre crop of
``input_size`` with torchvision's ``int(round((h - crop) / 2))`` offsets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np

from robustbench_sys import noises
from robustbench_sys.noises.stages import pipeline_stages, short_name
from robustbench_sys.zoo import ModelCard, Preprocess


@dataclass(frozen=True)
class Pipeline(Preprocess):
    corrupt: str | None = None  # natural corruption on the cropped image
    graph: str | None = None    # model graph change
    deploy: str | None = None   # precision / backend; None = eager fp32

    # ------------------------------------------------------------------ building
    @classmethod
    def from_card(cls, card: ModelCard) -> Pipeline:
        return cls(**dataclasses.asdict(card.preprocess))

    @classmethod
    def from_spec(cls, spec: dict | str) -> Pipeline:
        """The pipeline of a stored spec (:meth:`spec` or its JSON); the inverse of :meth:`spec`
        (a released part's spec gives its :class:`ReleasedPipeline`)."""
        d = json.loads(spec) if isinstance(spec, str) else dict(spec)
        if cls is Pipeline and d.get("released"):
            return ReleasedPipeline.from_spec(d)
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})

    def replace(self, **overrides) -> Pipeline:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown pipeline stage(s) {sorted(unknown)}; valid: "
                             f"{', '.join(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **overrides)

    # ------------------------------------------------------------------ identity
    def spec(self) -> dict:
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["resize_size"] = self.resize_size
        return d

    def spec_json(self) -> str:
        return json.dumps(self.spec(), sort_keys=True)

    @property
    def digest(self) -> str:
        return hashlib.sha1(self.spec_json().encode()).hexdigest()[:12]

    def describe(self) -> str:
        parts = []
        for st in pipeline_stages():
            value = getattr(self, st.name)
            if st.side == "image" and st.call != "crop":
                text = f"{st.name}:{short_name(value)}"
                parts.append(text + (f"({self.resize_size}->{self.input_size})" if st.call == "resize" else ""))
            elif value:
                parts.append(f"{st.name}:{short_name(value) if st.call != 'deploy' else value}")
        return " > ".join(parts)

    def stage_noises(self):
        """The registered noises this pipeline uses, as ``(stage name, Noise)``."""
        for st in pipeline_stages():
            value = getattr(self, st.name)
            if value and value not in st.builtin:
                yield st.name, noises.get(value)

    def noise_versions(self) -> dict:
        """Library versions of every stage actually used."""
        out: dict = {}
        for _, noise in self.stage_noises():
            out.update(noise.versions())
        return out

    def check_available(self) -> str | None:
        """None when every stage can run here, else the first reason it cannot."""
        for stage, noise in self.stage_noises():
            reason = noise.available()
            if reason:
                return f"{stage} {noise.name}: {reason}"
        return None

    # ------------------------------------------------------------------ geometry
    @property
    def resize_size(self) -> int:
        return int(math.floor(self.input_size / self.crop_pct))

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after resizing the short side to ``resize_size``."""
        s = self.resize_size
        if width <= height:
            return s, int(s * height / width)
        return int(s * width / height), s

    def center_crop(self, img: np.ndarray) -> np.ndarray:
        c = self.input_size
        h, w = img.shape[:2]
        if h < c or w < c:
            raise ValueError(f"image {w}x{h} smaller than the {c}px crop")
        top, left = int(round((h - c) / 2.0)), int(round((w - c) / 2.0))
        return img[top:top + c, left:left + c]

    # ------------------------------------------------------------------ image stages
    def decode(self, data: bytes) -> np.ndarray:
        return noises.get(self.decoder)(data)

    def to_crop(self, rgb: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Decoded HxWx3 uint8 -> the image stages after the decoder, in stage-table order (colour
        -> resize + centre crop [-> corrupt]): the HxWxC crop the model sees, before scaling
        (uint8; float32 on the 0..255 scale after a torch resize)."""
        img = rgb
        for st in pipeline_stages("image"):
            value = getattr(self, st.name)
            if st.call == "bytes" or value is None:
                continue
            if st.call == "resize":
                h, w = img.shape[:2]
                img = self.center_crop(img if value == "none" else noises.get(value)(img, self.target_size(w, h)))
            elif value in st.builtin:
                img = BUILTIN[value](img)
            elif st.call == "crop":
                img = noises.get(value)(np.ascontiguousarray(img), rng=rng)
            else:
                img = noises.get(value)(img)
        return np.ascontiguousarray(img)

    def to_input(self, rgb: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Decoded HxWx3 uint8 -> colour -> resize -> crop [-> corrupt] -> CHW float32 in [0, 1].

        ``rng`` seeds a random corruption (``preprocess`` derives it from the image bytes, so
        each image gets its own, reproducible draw)."""
        x = self.to_crop(rgb, rng).astype(np.float32) / np.float32(255.0)
        return x.transpose(2, 0, 1).copy()

    def image_rng(self, data: bytes) -> np.random.Generator | None:
        """The per-image generator of a random corruption, derived from the image bytes."""
        if not self.corrupt:
            return None
        return np.random.default_rng(int.from_bytes(hashlib.sha1(data).digest()[:8], "little"))

    def preprocess(self, data: bytes) -> np.ndarray:
        return self.to_input(self.decode(data), self.image_rng(data))

    def preprocess_crop(self, data: bytes) -> np.ndarray:
        """Encoded image -> the HxWxC crop of :meth:`to_crop` (what ``generate`` stores)."""
        return self.to_crop(self.decode(data), self.image_rng(data))

    def normalise(self, batch):
        """(N,3,H,W) float32 in [0,1] -> normalised, exactly as torchvision's Normalize (on the batch's device)."""
        import torch

        mean = torch.as_tensor(self.mean, dtype=batch.dtype, device=batch.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=batch.dtype, device=batch.device).view(-1, 1, 1)
        return batch.sub(mean).div(std)


def grey(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> HxWx1 uint8 luma, bit-exact with Pillow's ``convert("L")`` (ITU-R 601-2
    weights in 16-bit fixed point, rounded); a grey image (R = G = B) keeps its values."""
    x = rgb.astype(np.uint32)
    y = (x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000) >> 16
    return y.astype(np.uint8)[..., None]


#: the builtin stage values (:attr:`robustbench_sys.noises.stages.Stage.builtin`) that transform the image
BUILTIN = {"rgb": lambda img: img, "grey": grey}


@dataclass(frozen=True)
class ReleasedPipeline(Pipeline):
    """The pipeline of one released part: the image is decoded (PIL) and used as released (no
    resize, no crop), or ``released_input`` adapts it to a model of another input size:
    ``resize`` (the model's resize method to ``input_size``; ``crop_pct`` 1) or ``pad`` (centred
    on a black ``input_size`` canvas).  ``released`` / ``released_corrupt`` record which part it
    reads (``imagenet-c``, ``gaussian_noise-3``); natural tables read them like a ``corrupt`` stage."""

    released: str | None = None
    released_corrupt: str | None = None
    released_input: str | None = None

    def describe(self) -> str:
        how = {None: "as released (no resize, no crop)", "resize": f"resized to {self.input_size}px",
               "pad": f"centre-padded to {self.input_size}px"}[self.released_input]
        return f"released:{self.released} {self.released_corrupt} > {how} > " + super().describe()

    def to_crop(self, rgb: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        if self.released_input != "pad":
            return super().to_crop(rgb, rng)
        h, w = rgb.shape[:2]
        c = self.input_size
        if h > c or w > c:
            raise ValueError(f"image {w}x{h} larger than the {c}px input it is padded to")
        img = dataclasses.replace(self, input_size=min(h, w), released_input=None).to_crop(rgb, rng)
        out = np.zeros((c, c, img.shape[2]), dtype=img.dtype)
        top, left = (c - h) // 2, (c - w) // 2
        out[top:top + h, left:left + w] = img
        return out
