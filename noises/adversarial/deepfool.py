"""DeepFool (Moosavi-Dezfooli et al., CVPR 2016), minimum-norm L2 attack."""

from __future__ import annotations

import torch

from robustbench_sys.noises.adversarial.base import Attack, register_attack


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

    Step: the reference implementation's (LTS4/deepfool, the paper's authors):
    ``r_i = (|f'_l| / ||w'_l|| + 1e-4) * w'_l / ||w'_l||``, accumulated with the overshoot.
    torchattacks 3.5.1 steps exactly ``|f'_l| / ||w'_l||`` (no ``1e-4``), and with its
    per-step clamp to [0, 1] its outputs end *on* the decision boundary (top-2 logits equal
    to ~1e-6 on MNIST LeNet-5): whether they fool the model then depends on float rounding
    (batch size, CPU kernel).  The subclass below changes only that step.

    Cost: one Jacobian (K backward passes, K classes) per image and step: use small
    batches or few classes.

    Examples::
        >>> from robustbench_sys.noises import get
        >>> adv, used = get("adversarial/deepfool")(wrapped, x, y, steps=50)
    """

    name = "deepfool"
    norm = "L2"
    bounded = False
    defaults = {"steps": 50, "overshoot": 0.02}
    reference = "Moosavi-Dezfooli et al. 2016; torchattacks.DeepFool"
    test_params = dict(steps=10)

    def check_params(self, params):
        if int(params["steps"]) < 1 or float(params["overshoot"]) < 0:
            raise ValueError(f"attack {self.name!r}: steps must be >= 1 and overshoot >= 0, got {params}")

    def build(self, model, eps, params, n_classes):

        return _reference_step_class()(model, steps=int(params["steps"]), overshoot=float(params["overshoot"]))


#: the reference implementation's minimum step beyond the linearised boundary (L2)
MIN_STEP = 1e-4
_CLS = None


def _reference_step_class():
    """``torchattacks.DeepFool`` with the reference implementation's step (see the class doc)."""
    global _CLS
    if _CLS is not None:
        return _CLS
    import torchattacks

    class DeepFoolReferenceStep(torchattacks.DeepFool):
        def _forward_indiv(self, image, label):
            image.requires_grad = True
            logits = self.get_logits(image)[0]
            if int(logits.argmax()) != int(label):
                return True, logits.argmax(), image
            jac = self._construct_jacobian(logits, image)   # (K, 1, C, H, W)
            image = image.detach()
            others = [k for k in range(logits.numel()) if k != int(label)]
            f = (logits[others] - logits[label]).detach()
            w = (jac[others] - jac[label]).flatten(1)
            dist = f.abs() / w.norm(dim=1)
            j = int(dist.argmin())
            step = (dist[j] + MIN_STEP) * w[j] / w[j].norm()
            adv = (image + (1 + self.overshoot) * step.view_as(image)).clamp(0, 1).detach()
            return False, torch.tensor(others[j], device=image.device), adv

    _CLS = DeepFoolReferenceStep
    return _CLS
