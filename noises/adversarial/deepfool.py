"""DeepFool (Moosavi-Dezfooli et al., CVPR 2016), minimum-norm L2 attack."""

from __future__ import annotations

from noises.adversarial.base import Attack, register_attack


@register_attack
class DeepFool(Attack):
    """DeepFool-L2: step to the nearest linearised decision boundary, ``overshoot`` beyond it.

    Arguments:
        eps (float or None): optional L2 budget; adversarial images farther than eps are
            replaced by the clean image. (Default: None)
        steps (int): maximum iterations. (Default: 50, the paper's)
        overshoot (float): overshoot factor. (Default: 0.02, the paper's)
        seed (int): seed of the scoped RNG (DeepFool itself is deterministic).

    Shape:
        - images: :math:`(N, C, H, W)` in [0, 1]; labels: :math:`(N)`.
        - output: :class:`AttackResult`, ``adv`` in [0, 1].

    Cost: one Jacobian (K backward passes, K classes) per image and step: use small
    batches or few classes.

    Examples::
        >>> from noises import get
        >>> adv, used = get("adversarial/deepfool")(wrapped, x, y, steps=50)
    """

    name = "deepfool"
    norm = "L2"
    bounded = False
    defaults = {"steps": 50, "overshoot": 0.02}
    reference = "Moosavi-Dezfooli et al. 2016; torchattacks.DeepFool"

    def check_params(self, params):
        if int(params["steps"]) < 1 or float(params["overshoot"]) < 0:
            raise ValueError(f"attack {self.name!r}: steps must be >= 1 and overshoot >= 0, got {params}")

    def build(self, model, eps, params, n_classes):
        import torchattacks

        return torchattacks.DeepFool(model, steps=int(params["steps"]), overshoot=float(params["overshoot"]))
