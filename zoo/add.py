"""``zoo add``: a validated card for a user checkpoint, written into the user's cards directory.

    >>> from robustbench_sys.zoo.add import add_card
    >>> add_card("mine.pth", arch="timm:tf_efficientnet_lite0", name="mine")   # doctest: +SKIP
    PosixPath('/home/me/.config/robustbench-sys/cards/mine.toml')

The card pins the checkpoint's sha256 (``[weights] source = "file"``), writes the resolved
preprocessing explicitly (timm's pretrained_cfg of the tag, the torchvision weights'
transforms, or the ``preprocess`` given), and is written only after a load test shows that the
state dict fits the architecture and the written file parses back as a valid card.  An
existing card name (built in or the user's) is never overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from robustbench_sys.zoo import CardError, ModelCard, Preprocess, UnknownModel, build_arch, get_card, user_cards_dir
from robustbench_sys.zoo.preprocessing import check_registered, timm_cfg, timm_preprocess, torchvision_preprocess
from robustbench_sys.zoo.resolve import load_checkpoint, preprocess_from, torchvision_weights
from robustbench_sys.zoo.schema import card_from_dict, card_from_toml
from robustbench_sys.zoo.weights import sha256_file

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _resolve_preprocess(arch: str, preprocess: Any) -> tuple[Preprocess, str, int | None]:
    """(preprocess, where it came from, the class count the arch's weights metadata gives or None)."""
    if preprocess is not None:
        pp, source, _ = preprocess_from(preprocess, "--preprocess")
        n = None
    elif arch.startswith("timm:"):
        pp, source = timm_preprocess(arch.split(":", 1)[1])
        n = timm_cfg(arch.split(":", 1)[1])[0].num_classes
    elif arch.startswith("torchvision:"):
        model, _, wname = arch.split(":", 1)[1].partition(".")
        w = torchvision_weights(model, wname or None)
        pp, source, n = torchvision_preprocess(w), f"torchvision {type(w).__name__}.{w.name} transforms", \
            len(w.meta["categories"])
    else:
        raise CardError(f"--arch {arch}: its preprocessing cannot be resolved; give --preprocess card.toml "
                        "(a card whose [preprocess] the model was trained with)")
    return pp, source, n


def card_toml(card: ModelCard, *, preprocess_comment: str = "") -> str:
    """The TOML text of a card (keys in the documented order)."""
    def val(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return json.dumps(str(v), ensure_ascii=False)   # a JSON string is a TOML basic string

    lines = [f"# written by `robustbench-sys zoo add` on {time.strftime('%Y-%m-%d %H:%M')}",
             f"name = {val(card.name)}", f"arch = {val(card.arch)}", f"num_classes = {card.num_classes}",
             f"benchmark = {val(card.benchmark)}"]
    if card.description:
        lines.append(f"description = {val(card.description)}")
    lines += ["", "[weights]", *(f"{k} = {val(v)}" for k, v in card.weights.items())]
    lines += ["", "[preprocess]" + (f"   # {preprocess_comment}" if preprocess_comment else "")]
    pp = card.preprocess
    lines += [f"{f.name} = {val(getattr(pp, f.name))}" for f in dataclasses.fields(Preprocess)]
    if card.tags:
        lines += ["", "[tags]", *(f"{k} = {val(v)}" for k, v in card.tags.items())]
    return "\n".join(lines) + "\n"


def add_card(checkpoint: str | os.PathLike, *, arch: str, name: str, preprocess: Any = None,
             num_classes: int | None = None, description: str = "", benchmark: str | None = None,
             cards_dir: str | os.PathLike | None = None) -> Path:
    """Write ``<cards_dir>/<name>.toml`` for ``checkpoint`` (see the module doc); returns its path.

    ``cards_dir`` defaults to :func:`zoo.user_cards_dir` (``$ROBUSTBENCH_SYS_CARDS``'s first entry,
    else ``~/.config/robustbench-sys/cards``)."""
    if not _NAME.fullmatch(name):
        raise CardError(f"--name {name!r}: use letters, digits, '_', '-' and '.', starting with a letter or digit")
    try:
        existing = get_card(name)
    except UnknownModel:
        existing = None
    target = Path(os.path.expanduser(os.fspath(cards_dir))) if cards_dir else user_cards_dir()
    path = target / f"{name}.toml"
    if existing is not None or path.exists():
        raise CardError(f"--name {name}: a card of that name exists ({existing.path if existing else path}); "
                        "pick another name, or delete that card first")
    ckpt = Path(os.path.expanduser(os.fspath(checkpoint))).resolve()
    if not ckpt.is_file():
        raise CardError(f"zoo add: checkpoint {checkpoint} does not exist")
    pp, source, n = _resolve_preprocess(arch, preprocess)
    if preprocess is not None and isinstance(preprocess, (str, os.PathLike)):
        bench = benchmark or preprocess_from(preprocess, "--preprocess")[2]
    else:
        bench = benchmark
    d = {"name": name, "arch": arch, "num_classes": int(num_classes or n or 1000),
         "benchmark": bench or "imagenet",
         "description": description or f"{arch} from checkpoint {ckpt.name}",
         "weights": {"source": "file", "path": str(ckpt), "sha256": sha256_file(ckpt)},
         "preprocess": {f.name: (list(getattr(pp, f.name)) if f.name in ("mean", "std") else getattr(pp, f.name))
                        for f in dataclasses.fields(Preprocess)}}
    card = card_from_dict(d, where=f"zoo add {name}")
    check_registered(card.preprocess, f"zoo add {name}")
    model = build_arch(card)
    load_checkpoint(model, ckpt, f"zoo add --arch {arch}")          # the load test
    params_m = round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    card = dataclasses.replace(card, tags={"family": arch.split(":", 1)[-1].split(".", 1)[0], "params_m": params_m,
                                           "training": "user checkpoint", "added": time.strftime("%Y-%m-%d")})
    text = card_toml(card, preprocess_comment=source)
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f".{name}.toml.tmp"
    tmp.write_text(text, encoding="utf-8")
    try:
        card_from_toml(tmp)            # the written text parses back as a valid card
        with open(path, "x", encoding="utf-8") as f:   # never overwrite (a race included)
            f.write(text)
    finally:
        tmp.unlink(missing_ok=True)
    return path
