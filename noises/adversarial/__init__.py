"""Adversarial attacks (torchattacks-based), stage ``attack``.

Call signature of every registered ``adversarial/*`` noise::

    fn(model, images, labels, *, eps=None, seed=0, **params) -> AttackResult(adv, params)

- ``model``: an ``nn.Module`` in eval mode taking images in [0, 1] and returning logits;
  use :class:`NormalizedModel` ``(model, mean, std)`` so the model's own normalisation
  is applied inside and every attack sees exactly the function the evaluator scores.
- ``images``: float ``(N, C, H, W)`` in [0, 1]; ``labels``: int64 ``(N,)``.
- ``eps``: the budget in the attack's norm (``[0, 1]`` pixel units); required by bounded
  attacks, optional for minimum-norm ones (``cw-l2``, ``deepfool``).
- ``seed``: the global torch generator is reseeded with it inside
  ``torch.random.fork_rng`` and restored afterwards (same seed, same result; the
  caller's random state is untouched).
- ``params``: the attack's hyper-parameters (unknown names are an error); defaults are the
  published ones, listed in ``get(key).params``.
- returns :class:`AttackResult`: ``adv`` (same shape, in [0, 1]) and ``params``, the
  parameters actually used (defaults filled in, derived values such as the absolute step
  ``alpha``, ``max_perturbation``; record them with the result).

Registered: ``fgsm``, ``pgd-linf``, ``pgd-l2``, ``mim-linf``, ``cw-l2``, ``deepfool``,
``square`` (black-box), ``autoattack-standard``.  Named eps grids: :data:`SUITES`.
Transfer attacks: :func:`transfer_attack`.

    >>> from robustbench_sys.noises import get
    >>> from robustbench_sys.noises.adversarial import NormalizedModel
    >>> wrapped = NormalizedModel(model, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    >>> adv, used = get("adversarial/pgd-linf")(wrapped, x01, y, eps=4/255, steps=10, seed=0)
"""

from robustbench_sys.noises.adversarial import autoattack, cw_l2, deepfool, fgsm, mim, pgd_l2, pgd_linf, square  # noqa: F401  (registers)
from robustbench_sys.noises.adversarial.base import Attack, AttackResult, NormalizedModel, perturbation_norm
from robustbench_sys.noises.adversarial.suites import SUITES, attack_grid
from robustbench_sys.noises.adversarial.transfer import TransferResult, predict, transfer_attack

__all__ = ["Attack", "AttackResult", "NormalizedModel", "SUITES", "TransferResult", "attack_grid",
           "perturbation_norm", "predict", "transfer_attack"]
