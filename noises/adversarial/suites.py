"""Named attack suites as data: ``SUITES[name] -> [(attack, params), ...]``.

``params`` holds ``eps`` and any hyper-parameters that differ from the attack's defaults;
run an entry as ``get(f"adversarial/{attack}")(model, x, y, seed=seed, **params)``.

- ``robustart-linf`` / ``robustart-l2``: RobustART's grid (Tang et al. 2021): FGSM,
  PGD-L∞, MIM-L∞ and AutoAttack-L∞ at eps 0.5/255, 2/255, 8/255; PGD-L2 at 0.5, 2, 8;
  iterative attacks with 20 steps of relative size 3/40 (``alpha = 3/40 * eps``, foolbox's
  ``rel_stepsize`` convention).  RobustART's PGD-L1 and DDN-L2 have no torchattacks
  implementation and are not included.
- ``robustart``: both of the above.
- ``robustbench-imagenet-linf``: RobustBench's ImageNet L∞ leaderboard: AutoAttack
  standard at eps 4/255 (Croce et al. 2021).
- ``pgd-imagenet-linf-4``: PGD-L∞ at 4/255 (the quick white-box check of the same budget).
"""

from __future__ import annotations

RA_LINF_EPS = (0.5 / 255, 2 / 255, 8 / 255)
RA_L2_EPS = (0.5, 2.0, 8.0)
RA_ITER = {"steps": 20, "rel_stepsize": 3 / 40}

SUITES: dict[str, list[tuple[str, dict]]] = {
    "robustart-linf": (
        [("fgsm", {"eps": e}) for e in RA_LINF_EPS]
        + [("pgd-linf", {"eps": e, **RA_ITER}) for e in RA_LINF_EPS]
        + [("mim-linf", {"eps": e, **RA_ITER}) for e in RA_LINF_EPS]
        + [("autoattack-standard", {"eps": e, "norm": "Linf"}) for e in RA_LINF_EPS]
    ),
    "robustart-l2": [("pgd-l2", {"eps": e, **RA_ITER}) for e in RA_L2_EPS],
    "robustbench-imagenet-linf": [("autoattack-standard", {"eps": 4 / 255, "norm": "Linf"})],
    "pgd-imagenet-linf-4": [("pgd-linf", {"eps": 4 / 255, **RA_ITER})],
}
SUITES["robustart"] = SUITES["robustart-linf"] + SUITES["robustart-l2"]


def attack_grid(name: str) -> list[tuple[str, dict]]:
    """A copy of suite ``name``'s entries (mutating it leaves :data:`SUITES` intact)."""
    if name not in SUITES:
        raise KeyError(f"unknown attack suite {name!r}; valid choices: {', '.join(sorted(SUITES))}")
    return [(a, dict(p)) for a, p in SUITES[name]]
