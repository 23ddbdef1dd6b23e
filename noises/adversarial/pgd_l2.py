"""PGD-L2 (Madry et al., ICLR 2018) with random start."""

from __future__ import annotations

from robustbench_sys.noises.adversarial.base import StepAttack, register_attack


@register_attack
class PGDL2(StepAttack):
    """PGD-L2: ``steps`` normalised-gradient steps of ``rel_stepsize * eps``, projected on the L2 ball.

    Arguments:
        eps (float): L2 budget (required), in [0, 1] pixel units over the whole image.
        steps (int): iterations. (Default: 10)
        rel_stepsize (float): step relative to eps (``alpha = rel_stepsize * eps``).
            (Default: 0.2, torchattacks' eps 1.0 / alpha 0.2)
        random_start (bool): random start in the L2 ball. (Default: True)
        seed (int): seed of the random start.

    Shape:
        - images: :math:`(N, C, H, W)` in [0, 1]; labels: :math:`(N)`.
        - output: :class:`AttackResult`, ``adv`` in [0, 1], ``||adv - x||_2 <= eps``.

    Examples::
        >>> from robustbench_sys.noises import get
        >>> adv, used = get("adversarial/pgd-l2")(wrapped, x, y, eps=0.5, steps=20, rel_stepsize=3/40)
    """

    name = "pgd-l2"
    norm = "L2"
    defaults = {"steps": 10, "rel_stepsize": 0.2, "random_start": True}
    reference = "Madry et al. 2018; torchattacks.PGDL2"
    test_params = dict(eps=2.0, steps=10)
    torchattacks_name = "PGDL2"

    def extra_args(self, params):
        return {"random_start": bool(params["random_start"])}
