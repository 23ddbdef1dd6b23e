"""Transfer attacks: craft on a source model, score on a target model."""

from __future__ import annotations

from typing import NamedTuple

import torch


class TransferResult(NamedTuple):
    """``adv``: images crafted on the source; ``params``: what the attack used (plus
    ``"transfer": True``); ``source_correct`` / ``target_correct``: per-image bool (N,)
    of each model's prediction on ``adv`` matching the label."""

    adv: torch.Tensor
    params: dict
    source_correct: torch.Tensor
    target_correct: torch.Tensor


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Arg-max predictions of ``model`` on images in [0, 1], shape (N,)."""
    return torch.cat([model(images[i:i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])


def transfer_attack(attack, source: torch.nn.Module, target: torch.nn.Module, images: torch.Tensor,
                    labels: torch.Tensor, *, eps: float | None = None, seed: int = 0, **params) -> TransferResult:
    """Run ``attack`` (a registered attack or its key, e.g. ``"pgd-linf"``) on ``source``
    and score the adversarial images on ``target``.  Both models take images in [0, 1]
    (wrap each with its own :class:`NormalizedModel`).

    Example::
        >>> r = transfer_attack("pgd-linf", wrapped_a, wrapped_b, x, y, eps=4/255, seed=0)
        >>> r.target_correct.float().mean()
    """
    if isinstance(attack, str):
        from robustbench_sys.noises.registry import get

        attack = get(attack if "/" in attack else f"adversarial/{attack}")
    res = attack(source, images, labels, eps=eps, seed=seed, **params)
    if target.training:
        raise ValueError("transfer_attack: the target model is in training mode; wrap it with NormalizedModel")
    used = {**res.params, "transfer": True, "source": type(source).__name__, "target": type(target).__name__}
    return TransferResult(res.adv, used, predict(source, res.adv) == labels, predict(target, res.adv) == labels)
