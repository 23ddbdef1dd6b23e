"""Square Attack (Andriushchenko et al., ECCV 2020), score-based black-box, L∞."""

from __future__ import annotations

from robustbench_sys.noises.adversarial.base import Attack, register_attack


@register_attack
class SquareLinf(Attack):
    """Square-L∞: random square-shaped updates accepted when the margin loss drops (queries only, no gradients).

    Arguments:
        eps (float): L∞ budget (required).
        n_queries (int): query budget per image. (Default: 5000, as in AutoAttack)
        n_restarts (int): restarts. (Default: 1)
        p_init (float): initial fraction of pixels changed. (Default: 0.8, as in AutoAttack)
        loss (str): ``"margin"`` or ``"ce"``. (Default: "margin")
        seed (int): seed of the random squares (passed to torchattacks, which reseeds torch).

    Shape:
        - images: :math:`(N, C, H, W)` in [0, 1]; labels: :math:`(N)`.
        - output: :class:`AttackResult`, ``adv`` in [0, 1], ``||adv - x||_∞ <= eps``.

    Examples::
        >>> from robustbench_sys.noises import get
        >>> adv, used = get("adversarial/square")(wrapped, x, y, eps=8/255, n_queries=1000, seed=0)
    """

    name = "square"
    norm = "Linf"
    threat = "black-box"
    defaults = {"n_queries": 5000, "n_restarts": 1, "p_init": 0.8, "loss": "margin"}
    reference = "Andriushchenko et al. 2020; AutoAttack's settings; torchattacks.Square"
    test_params = dict(eps=0.3, n_queries=150)

    def check_params(self, params):
        if int(params["n_queries"]) < 1 or params["loss"] not in ("margin", "ce"):
            raise ValueError(f"attack {self.name!r}: n_queries must be >= 1 and loss 'margin' or 'ce', got {params}")

    def build(self, model, eps, params, n_classes):
        import torch
        import torchattacks

        # torchattacks reseeds torch's global generator with this seed (inside our fork_rng)
        seed = int(torch.initial_seed())
        return torchattacks.Square(model, norm="Linf", eps=eps, n_queries=int(params["n_queries"]),
                                   n_restarts=int(params["n_restarts"]), p_init=float(params["p_init"]),
                                   loss=params["loss"], resc_schedule=True, seed=seed, verbose=False)
