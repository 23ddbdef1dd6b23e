"""Command-line pieces for "any model, one command": ``zoo add`` and the ``eval`` options
``--checkpoint`` / ``--preprocess`` / ``--name`` that turn ``--model`` values into
:func:`~robustbench_sys.eval.api.evaluate` arguments.

    robustbench-sys eval --model timm:tf_efficientnet_lite0 --checkpoint lite0.pth --data DIR
    robustbench-sys eval --model torchvision:mobilenet_v2.IMAGENET1K_V1 --checkpoint mv2.pth --data DIR
    robustbench-sys eval --model model.onnx --preprocess mobilenet_v2 --data DIR
    robustbench-sys eval --model python:mypkg.models:build --preprocess my_card.toml --data DIR
    robustbench-sys zoo add mine.pth --arch timm:tf_efficientnet_lite0 --name mine
"""

from __future__ import annotations

import argparse
import os

from robustbench_sys.errors import UserError


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint`` / ``--preprocess`` / ``--name`` on a parser that has ``--model``."""
    parser.add_argument("--checkpoint", default=None,
                        help="state dict (.safetensors or torch.save file) for a timm:NAME[.TAG], "
                             "torchvision:NAME[.WEIGHTS] or python:pkg.module:factory --model")
    parser.add_argument("--preprocess", default=None,
                        help="zoo card name or .toml card whose [preprocess] a .onnx or python: --model "
                             "takes (required for them; replaces the resolved one of timm:/torchvision:)")
    parser.add_argument("--name", default=None, help="the model's name in the results (one --model)")


def eval_model_kwargs(models: list[str] | str, checkpoint: str | None = None, preprocess: str | None = None,
                      name: str | None = None) -> dict:
    """The :func:`evaluate` keyword arguments for ``--model`` (a list, as the CLI's comma split
    gives it, or one string), ``--checkpoint``, ``--preprocess`` and ``--name``."""
    items = [models] if isinstance(models, str) else list(models)
    if not items:
        raise UserError("--model: give at least one model")
    if checkpoint is not None and not os.path.isfile(os.path.expanduser(checkpoint)):
        raise UserError(f"--checkpoint {checkpoint}: no such file")
    return {"models": items[0] if len(items) == 1 else items, "checkpoint": checkpoint,
            "preprocess": preprocess, "name": name}


def add_zoo_add_parser(zoo_subparsers) -> argparse.ArgumentParser:
    """``zoo add CHECKPOINT --arch ARCH --name NAME [--preprocess CARD] [--num-classes N] [--cards-dir DIR]``."""
    p = zoo_subparsers.add_parser(
        "add", help="write a validated card for your checkpoint into your cards directory",
        description="Write <cards dir>/<NAME>.toml for CHECKPOINT: its sha256, the resolved preprocessing "
                    "(timm pretrained_cfg of the tag, torchvision weights' transforms, or --preprocess), "
                    "after a load test that the state dict fits ARCH.  Cards directory: the first "
                    "$ROBUSTBENCH_SYS_CARDS entry, else ~/.config/robustbench-sys/cards.  Never overwrites.")
    p.add_argument("checkpoint", help="state dict: .safetensors or a torch.save file (possibly under "
                                      "'state_dict' / 'model')")
    p.add_argument("--arch", required=True, help="timm:NAME[.TAG], torchvision:NAME[.WEIGHTS], zoo:NAME or "
                                                 "python:pkg.module:factory")
    p.add_argument("--name", required=True, help="the new card's name (must not exist yet)")
    p.add_argument("--preprocess", default=None,
                   help="zoo card name or .toml card whose [preprocess] the model takes (required unless "
                        "--arch is timm: or torchvision:)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier width when it differs from the arch's pretrained one")
    p.add_argument("--description", default="")
    p.add_argument("--cards-dir", default=None, help="write here instead of the user's cards directory")
    return p


def cmd_zoo_add(args) -> int:
    """Run ``zoo add``; prints the written card's path.  Bad input -> :class:`UserError`."""
    from robustbench_sys import zoo
    from robustbench_sys.zoo.add import add_card

    try:
        path = add_card(args.checkpoint, arch=args.arch, name=args.name, preprocess=args.preprocess,
                        num_classes=args.num_classes, description=args.description, cards_dir=args.cards_dir)
    except zoo.CardError as e:
        raise UserError(str(e)) from None
    card = zoo.get_card(path)
    print(f"{card.name}: wrote {path} (sha256 {card.weights['sha256'][:16]}…, "
          f"preprocess {card.preprocess.resize} {card.preprocess.input_size}/{card.preprocess.crop_pct})")
    if path.parent.resolve() not in [d.resolve() for d in zoo.card_dirs()]:
        print(f"  (not in the cards search path: use --model {path}, or add its folder to $ROBUSTBENCH_SYS_CARDS)")
    return 0
