"""AutoAttack, standard version (Croce & Hein, ICML 2020): APGD-CE, APGD-T, FAB-T, Square."""

from __future__ import annotations

from robustbench_sys.noises.adversarial.base import Attack, register_attack


@register_attack
class AutoAttackStandard(Attack):
    """AutoAttack standard: APGD-CE, APGD-T, FAB-T and Square in sequence, each on the images still \
classified correctly.

    Arguments:
        eps (float): budget (required), e.g. 4/255 for RobustBench ImageNet L∞.
        norm (str): ``"Linf"`` or ``"L2"``. (Default: "Linf")
        steps (int): iterations of APGD-CE, APGD-T and FAB-T. (Default: 100, published)
        n_target_classes (int): target classes of APGD-T and FAB-T, the highest-scoring
            wrong ones. (Default: 9, published; capped at K - 1)
        n_queries (int): Square's query budget. (Default: 5000, published)
        seed (int): seed of the random starts (passed to each component).

    The components are composed here from torchattacks' APGD, APGDT, FAB and Square with
    the published settings (1 restart each, APGD rho 0.75, FAB alpha_max 0.1 / eta 1.05 /
    beta 0.9, Square p_init 0.8): ``torchattacks.AutoAttack`` itself runs 10 iterations
    and ``K - 1`` targets, which is neither the paper's nor RobustBench's configuration.

    Shape:
        - images: :math:`(N, C, H, W)` in [0, 1]; labels: :math:`(N)`.
        - output: :class:`AttackResult`, ``adv`` in [0, 1], within eps.

    Examples::
        >>> from robustbench_sys.noises import get
        >>> adv, used = get("adversarial/autoattack-standard")(wrapped, x, y, eps=4/255, seed=0)
    """

    name = "autoattack-standard"
    norm = "Linf"
    defaults = {"norm": "Linf", "steps": 100, "n_target_classes": 9, "n_queries": 5000}
    reference = "Croce & Hein 2020 (auto-attack, version='standard'); RobustBench"
    test_params = dict(eps=0.3, steps=10, n_queries=100)
    needs_n_classes = True

    def check_params(self, params):
        if params["norm"] not in ("Linf", "L2"):
            raise ValueError(f"attack {self.name!r}: norm must be 'Linf' or 'L2', got {params['norm']!r}")
        if min(int(params["steps"]), int(params["n_target_classes"]), int(params["n_queries"])) < 1:
            raise ValueError(f"attack {self.name!r}: steps, n_target_classes and n_queries must be >= 1")

    def __call__(self, model, images, labels, *, eps=None, seed=0, **params):
        # the eps check and the recorded norm follow the chosen norm
        norm = params.get("norm", self.defaults["norm"])
        inst = self
        if norm != self.norm:
            inst = AutoAttackStandard()
            inst.norm = norm
        return Attack.__call__(inst, model, images, labels, eps=eps, seed=seed, **params)

    def build(self, model, eps, params, n_classes):
        import torch
        import torchattacks

        seed = int(torch.initial_seed())
        norm, steps = params["norm"], int(params["steps"])
        n_t = min(int(params["n_target_classes"]), n_classes - 1)
        params["n_target_classes"] = n_t
        # torchattacks' targeted APGD / FAB attack the n_classes - 1 highest wrong logits
        comps = [
            torchattacks.APGD(model, norm=norm, eps=eps, steps=steps, n_restarts=1, seed=seed, loss="ce",
                              eot_iter=1, rho=0.75),
            torchattacks.APGDT(model, norm=norm, eps=eps, steps=steps, n_restarts=1, seed=seed, eot_iter=1,
                               rho=0.75, n_classes=n_t + 1),
            torchattacks.FAB(model, norm=norm, eps=eps, steps=steps, n_restarts=1, alpha_max=0.1, eta=1.05,
                             beta=0.9, seed=seed, multi_targeted=True, n_classes=n_t + 1),
            torchattacks.Square(model, norm=norm, eps=eps, n_queries=int(params["n_queries"]), n_restarts=1,
                                p_init=0.8, loss="margin", resc_schedule=True, seed=seed),
        ]
        names = ["apgd-ce", "apgd-t", "fab-t", "square"]
        params["components"] = ",".join(names)
        params["black_box_components"] = "square"
        return _recording_multi_attack(torchattacks)(comps, names, params)


def _recording_multi_attack(torchattacks):
    """``torchattacks.MultiAttack`` that also records, per image, which component fooled the
    model first (``params["broken_by"]``: the component's name, or ``""`` when none did), so
    AutoAttack's Square check can be computed from the stored per-image rows
    (:func:`robustbench_sys.metrics.adversarial.check_black_box_lowers_robust_accuracy`).
    The adversarial images are exactly MultiAttack's: same order, same images per component."""

    class RecordingMultiAttack(torchattacks.MultiAttack):
        def __init__(self, attacks, names, params):
            super().__init__(attacks)
            self.names, self.params = names, params

        def forward(self, images, labels):
            import torch

            n = images.shape[0]
            fails = torch.arange(n, device=self.device)
            final = images.clone().detach().to(self.device)
            labels = labels.clone().detach().to(self.device)
            broken_by = [""] * n
            for name, attack in zip(self.names, self.attacks):
                adv = attack(images[fails], labels[fails])
                correct = self.get_logits(adv).argmax(1) == labels[fails]
                hit = ~correct
                final[fails[hit]] = adv[hit]
                for i in fails[hit].tolist():
                    broken_by[i] = name
                fails = fails[correct]
                if len(fails) == 0:
                    break
            self.params["broken_by"] = broken_by
            return final

    return RecordingMultiAttack
