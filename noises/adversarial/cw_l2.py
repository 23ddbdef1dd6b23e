"""CW-L2 (Carlini & Wagner, S&P 2017), minimum-norm L2 attack (fixed c, no binary search)."""

from __future__ import annotations

from robustbench_sys.noises.adversarial.base import Attack, register_attack


@register_attack
class CWL2(Attack):
    """CW-L2: Adam on ``||delta||_2^2 + c * f(x + delta)`` in tanh space (minimum-norm).

    Arguments:
        eps (float or None): optional L2 budget; adversarial images farther than eps are
            replaced by the clean image (the attack failed at that budget). (Default: None)
        c (float): weight of the misclassification term. (Default: 1)
        kappa (float): confidence margin. (Default: 0)
        steps (int): Adam iterations. (Default: 50; the paper uses up to 10,000 with a binary search on c)
        lr (float): Adam learning rate. (Default: 0.01)
        seed (int): seed of the scoped RNG (CW itself is deterministic).

    Shape:
        - images: :math:`(N, C, H, W)` in [0, 1]; labels: :math:`(N)`.
        - output: :class:`AttackResult`, ``adv`` in [0, 1]; ``params["n_rejected_over_eps"]`` when eps is given.

    Examples::
        >>> from robustbench_sys.noises import get
        >>> adv, used = get("adversarial/cw-l2")(wrapped, x, y, eps=0.5, steps=100)
    """

    name = "cw-l2"
    norm = "L2"
    bounded = False
    defaults = {"c": 1.0, "kappa": 0.0, "steps": 50, "lr": 0.01}
    reference = "Carlini & Wagner 2017; torchattacks.CW defaults"
    test_params = dict(steps=30, c=10.0, lr=0.1)

    def check_params(self, params):
        if int(params["steps"]) < 1 or not float(params["c"]) > 0:
            raise ValueError(f"attack {self.name!r}: steps must be >= 1 and c > 0, got {params}")

    def build(self, model, eps, params, n_classes):
        import torchattacks

        return torchattacks.CW(model, c=float(params["c"]), kappa=float(params["kappa"]),
                               steps=int(params["steps"]), lr=float(params["lr"]))
