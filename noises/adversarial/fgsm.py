"""FGSM (Goodfellow et al., ICLR 2015), L∞, one signed-gradient step of size eps."""

from __future__ import annotations

from robustbench_sys.noises.adversarial.base import Attack, register_attack


@register_attack
class FGSM(Attack):
    """FGSM: one L∞ step ``x + eps * sign(grad CE)``, clipped to [0, 1].

    Arguments:
        eps (float): L∞ budget (required).
        seed (int): seed of the scoped RNG (FGSM itself is deterministic).

    Shape:
        - images: :math:`(N, C, H, W)` in [0, 1]; labels: :math:`(N)`.
        - output: :class:`AttackResult` with ``adv`` :math:`(N, C, H, W)` in [0, 1].

    Examples::
        >>> from robustbench_sys.noises import get
        >>> adv, used = get("adversarial/fgsm")(wrapped, images, labels, eps=8/255, seed=0)
    """

    name = "fgsm"
    norm = "Linf"
    defaults: dict = {}
    reference = "Goodfellow et al. 2015; torchattacks.FGSM"
    test_params = dict(eps=0.3)

    def build(self, model, eps, params, n_classes):
        import torchattacks

        return torchattacks.FGSM(model, eps=eps)
