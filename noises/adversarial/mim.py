"""MIM / MI-FGSM (Dong et al., CVPR 2018), L∞ momentum iterative attack."""

from __future__ import annotations

from robustbench_sys.noises.adversarial.base import StepAttack, register_attack


@register_attack
class MIMLinf(StepAttack):
    """MIM-L∞: iterative FGSM with gradient momentum ``decay``; step ``rel_stepsize * eps``.

    Arguments:
        eps (float): L∞ budget (required).
        steps (int): iterations. (Default: 10, the paper's T)
        rel_stepsize (float): step relative to eps. (Default: 0.1 = 1/T, the paper's alpha = eps / T)
        decay (float): momentum factor mu. (Default: 1.0, the paper's)
        seed (int): seed of the scoped RNG (MIM itself is deterministic).

    Shape:
        - images: :math:`(N, C, H, W)` in [0, 1]; labels: :math:`(N)`.
        - output: :class:`AttackResult`, ``adv`` in [0, 1], ``||adv - x||_∞ <= eps``.

    Examples::
        >>> from robustbench_sys.noises import get
        >>> adv, used = get("adversarial/mim-linf")(wrapped, x, y, eps=8/255)
    """

    name = "mim-linf"
    norm = "Linf"
    defaults = {"steps": 10, "rel_stepsize": 0.1, "decay": 1.0}
    reference = "Dong et al. 2018; torchattacks.MIFGSM"
    test_params = dict(eps=0.3, steps=10)
    torchattacks_name = "MIFGSM"

    def extra_args(self, params):
        return {"decay": float(params["decay"])}
