"""Preprocessing resolution: a timm data config / pretrained_cfg or a torchvision weights'
transforms as a :class:`zoo.Preprocess`, and the checks every preprocessing passes
(:func:`make_preprocess`, used for ``[preprocess]`` tables too)."""

from __future__ import annotations

import math

from robustbench_sys.noises.stages import full_key, get_stage
from robustbench_sys.zoo.card import CardError, Preprocess

#: timm / torchvision interpolation names -> the Pillow resize noise (both resize PIL images with Pillow)
INTERPOLATION = {"bilinear": "resize/pil-bilinear", "bicubic": "resize/pil-bicubic", "nearest": "resize/pil-nearest",
                 "lanczos": "resize/pil-lanczos", "box": "resize/pil-box", "hamming": "resize/pil-hamming"}
#: the largest model input (pixels a side) a card may ask for; larger ones exhaust memory long
#: before they evaluate (ImageNet models take 224..800)
MAX_INPUT_SIZE = 4096
#: the smallest crop_pct (the centre crop's share of the resized short side; models use 0.75..1)
MIN_CROP_PCT = 0.1


def bad_where(where: str):
    return lambda msg: CardError(f"{where}: {msg}")


def from_data_config(cfg: dict, where: str) -> Preprocess:
    """A timm data config (``input_size``, ``interpolation``, ``crop_pct``, ``crop_mode``,
    ``mean``, ``std``) as the zoo's preprocessing: PIL decode, the Pillow resize of that
    interpolation, ``floor(size / crop_pct)`` then a centre crop (timm's eval transform)."""
    missing = [k for k in ("input_size", "interpolation", "crop_pct", "mean", "std") if k not in cfg]
    if missing:
        raise CardError(f"{where}: the data config has no {', '.join(missing)}; give the dict of "
                        "timm.data.resolve_data_config({}, model=...)")
    mode = cfg.get("crop_mode", "center")   # timm's own default
    if mode != "center":
        raise CardError(f"{where}: crop_mode {mode!r} is not supported (only 'center': resize the short side, "
                        "centre crop); give preprocess= with an explicit zoo.Preprocess")
    size = cfg["input_size"]
    size = tuple(size) if isinstance(size, (list, tuple)) else (3, size, size)
    if len(size) != 3 or size[1] != size[2] or size[0] not in (1, 3):
        raise CardError(f"{where}: input_size {size} is not (3 or 1, N, N); only square inputs are supported")
    interp = cfg["interpolation"]
    if interp not in INTERPOLATION:
        raise CardError(f"{where}: interpolation {interp!r} has no resize noise; valid: {', '.join(INTERPOLATION)}")
    return make_preprocess(bad_where(where), decoder="decoder/pil", color="rgb" if size[0] == 3 else "grey",
                           resize=INTERPOLATION[interp], input_size=int(size[1]), crop_pct=cfg["crop_pct"],
                           mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))


def timm_cfg(name_tag: str):
    """timm's pretrained_cfg of ``NAME[.TAG]`` (the default tag when none is given) and the full
    ``NAME.TAG`` it stands for; one-line :class:`CardError` when timm has none."""
    import timm

    name = name_tag.split(".", 1)[0]
    if name not in timm.list_models():
        raise CardError(f"timm has no model {name!r} (timm.list_models())")
    cfg = timm.models.get_pretrained_cfg(name_tag)
    if cfg is None:
        tags = list(timm.list_pretrained(f"{name}.*"))
        raise CardError(f"timm has no pretrained_cfg for {name_tag!r} (its tags: {', '.join(tags) or 'none'}); "
                        "give the preprocessing explicitly (--preprocess card.toml)")
    return cfg, (f"{name}.{cfg.tag}" if cfg.tag else name)


def timm_preprocess(name_tag: str) -> tuple[Preprocess, str]:
    """The preprocessing of timm's pretrained_cfg for ``NAME[.TAG]`` (the default tag when none is
    given), and where it came from (``"timm pretrained_cfg NAME.TAG"``)."""
    from timm.data import resolve_data_config

    cfg, full = timm_cfg(name_tag)
    data = resolve_data_config({}, pretrained_cfg=cfg.to_dict())
    return from_data_config(data, f"timm pretrained_cfg of {full}"), f"timm pretrained_cfg {full}"


def exact_crop_pct(crop: int, resize: int) -> float:
    """A crop_pct with ``floor(crop / crop_pct) == resize`` exactly (``crop / resize`` can round
    to a float whose quotient lands just under ``resize``)."""
    pct = crop / resize
    for _ in range(64):
        if math.floor(crop / pct) == resize:
            return pct
        pct = math.nextafter(pct, 0.0 if math.floor(crop / pct) < resize else 1.0)
    raise CardError(f"no crop_pct gives floor({crop} / crop_pct) = {resize}")


def torchvision_weights(name: str, weights: str | None):
    """The torchvision weights enum member ``NAME.WEIGHTS`` (``DEFAULT`` when not given)."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise CardError(f"torchvision has no model {name!r} (torchvision.models.list_models())") from None
    try:
        return enum[weights or "DEFAULT"] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        raise CardError(f"torchvision {name} has no weights {weights!r}; valid: "
                        f"{', '.join(w.name for w in enum)}") from None


def torchvision_preprocess(w) -> Preprocess:
    """The preprocessing of a torchvision weights enum member's ``transforms()`` (ImageClassification:
    Resize(resize_size, interpolation) -> CenterCrop(crop_size) -> Normalize(mean, std))."""
    where = f"torchvision weights {type(w).__name__}.{w.name}"
    t = w.transforms()
    if not all(hasattr(t, a) for a in ("crop_size", "resize_size", "interpolation", "mean", "std")):
        raise CardError(f"{where}: its transforms ({type(t).__name__}) are not an image classification preset")
    interp = t.interpolation.value
    if interp not in INTERPOLATION:
        raise CardError(f"{where}: interpolation {interp!r} has no resize noise")
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    return make_preprocess(bad_where(where), decoder="decoder/pil", color="rgb", resize=INTERPOLATION[interp],
                           input_size=crop, crop_pct=exact_crop_pct(crop, resize), mean=tuple(t.mean),
                           std=tuple(t.std))


def make_preprocess(bad, *, decoder, color, resize, input_size, crop_pct, mean, std) -> Preprocess:
    """Check the values of a preprocessing and build it (``bad(msg)`` makes the error).  Whether the
    stage keys name registered noises is :func:`check_registered` (it imports every noise family,
    torch included, so card parsing leaves it to the evaluator and ``zoo add``)."""
    stages = {}
    for stage, value in (("decoder", decoder), ("color", color), ("resize", resize)):
        if not isinstance(value, str) or not value:
            raise bad(f"[preprocess] {stage} must be a string (a noise key such as "
                      f"{ {'decoder': 'pil', 'color': 'rgb', 'resize': 'pil-bilinear'}[stage]!r}), got {value!r}")
        st = get_stage(stage)
        try:
            key = full_key(stage, value)
        except ValueError as e:
            raise bad(f"[preprocess] {e}") from None
        if key is None:
            raise bad(f"[preprocess] {stage} is empty")
        if key not in st.builtin and key.split("/", 1)[0] not in st.families:
            raise bad(f"[preprocess] {stage} {value!r} is not a {stage} (a {'/'.join(st.families)}/NAME noise key"
                      f"{' or ' + ', '.join(st.builtin) if st.builtin else ''})")
        stages[stage] = key
    if not isinstance(input_size, int) or isinstance(input_size, bool) or not 1 <= input_size <= MAX_INPUT_SIZE:
        raise bad(f"[preprocess] input_size must be an integer 1..{MAX_INPUT_SIZE} (pixels), got {input_size!r}")
    if not _number(crop_pct) or not MIN_CROP_PCT <= float(crop_pct) <= 1:
        raise bad(f"[preprocess] crop_pct must be a number in [{MIN_CROP_PCT}, 1] (the crop's share of the "
                  f"resized short side, e.g. 0.875), got {crop_pct!r}")
    if math.floor(input_size / float(crop_pct)) > 2 * MAX_INPUT_SIZE:
        raise bad(f"[preprocess] input_size / crop_pct = {input_size} / {crop_pct!r} resizes images to over "
                  f"{2 * MAX_INPUT_SIZE} pixels a side; give a larger crop_pct or a smaller input_size")
    vecs = {}
    for k, v in (("mean", mean), ("std", std)):
        if not isinstance(v, (list, tuple)) or len(v) not in (1, 3) or not all(_number(x) for x in v):
            raise bad(f"[preprocess] {k} must be a list of 3 (or 1) numbers, got {v!r}")
        vecs[k] = tuple(float(x) for x in v)
    if any(not math.isfinite(x) for x in vecs["mean"]) or any(not (x > 0 and math.isfinite(x)) for x in vecs["std"]):
        raise bad(f"[preprocess] std must be > 0 and mean finite, got mean {list(vecs['mean'])} "
                  f"std {list(vecs['std'])}")
    return Preprocess(decoder=stages["decoder"], color=stages["color"], resize=stages["resize"],
                      input_size=input_size, crop_pct=float(crop_pct), mean=vecs["mean"], std=vecs["std"])


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_registered(pp: Preprocess, where: str) -> None:
    """One-line :class:`CardError` unless every stage key of ``pp`` is a builtin value or a
    registered noise of its stage's family."""
    from robustbench_sys import noises

    for stage in ("decoder", "color", "resize"):
        st, key = get_stage(stage), getattr(pp, stage)
        if key in st.builtin:
            continue
        valid = [*st.builtin, *(k for f in st.families for k in noises.list_noises(family=f))]
        if key not in valid:
            raise CardError(f"{where}: [preprocess] {stage} {key!r} is not a known {stage}; valid: {', '.join(valid)}")
