"""PGD-L∞ (Madry et al., ICLR 2018) with random start."""

from __future__ import annotations

from robustbench_sys.noises.adversarial.base import StepAttack, register_attack


@register_attack
class PGDLinf(StepAttack):
    """PGD-L∞: ``steps`` signed-gradient steps of ``rel_stepsize * eps`` from a random start.

    Arguments:
        eps (float): L∞ budget (required).
        steps (int): iterations. (Default: 10)
        rel_stepsize (float): step size relative to eps, foolbox's convention
            (``alpha = rel_stepsize * eps``). (Default: 0.25, i.e. 2/255 at eps 8/255, Madry's CIFAR setting)
        random_start (bool): uniform start in the eps ball. (Default: True)
        seed (int): seed of the random start.

    Shape:
        - images: :math:`(N, C, H, W)` in [0, 1]; labels: :math:`(N)`.
        - output: :class:`AttackResult`, ``adv`` :math:`(N, C, H, W)` in [0, 1], ``||adv - x||_∞ <= eps``.

    Examples::
        >>> from robustbench_sys.noises import get
        >>> adv, used = get("adversarial/pgd-linf")(wrapped, x, y, eps=4/255, steps=20, seed=0)
        >>> used["alpha"]   # the absolute step actually used
    """

    name = "pgd-linf"
    norm = "Linf"
    defaults = {"steps": 10, "rel_stepsize": 0.25, "random_start": True}
    reference = "Madry et al. 2018; torchattacks.PGD"
    test_params = dict(eps=0.3, steps=10)
    torchattacks_name = "PGD"

    def extra_args(self, params):
        return {"random_start": bool(params["random_start"])}
