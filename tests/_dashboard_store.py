"""Real results stores per test session, shared by tests/test_dashboard*.py.

:func:`real_store` is built once by running the evaluator on real images (the foolbox demo set:
mobilenet_v2 and tf_efficientnet_lite0, clean + a three-option resize suite, 6 images).
:func:`rich_store` is a copy of it plus two natural corruptions whose names share a long prefix
(``natural/defocus_blur-1`` / ``-2``) and a real FGSM attack (an adversarial family: its per-image
rows hold predictions, never the adversarial pixels).  Both skip when the demo set or the offline
weights are not in the cache (scripts/setup.sh fetches them).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

MODELS = ("mobilenet_v2", "tf_efficientnet_lite0")
RESIZE_OPTIONS = ("cv2-nearest", "pil-nearest", "cv2-area")
RESIZE = tuple(f"resize/{r}" for r in RESIZE_OPTIONS)   # stored condition names (family-prefixed)
LIMIT = 6
_STORE: dict[str, Path] = {}

SUITE = """name = "resize-mini"
family = "resize"
version = 1
description = "three resize options (dashboard tests)"
""" + "".join(f'\n[[conditions]]\nname = "{r}"\nresize = "{r}"\n' for r in RESIZE_OPTIONS)

NATURAL_OPTIONS = ("defocus_blur-1", "defocus_blur-2")
NATURAL = tuple(f"natural/{n}" for n in NATURAL_OPTIONS)
NATURAL_SUITE = """name = "natural-mini"
family = "natural"
version = 1
description = "two defocus severities (dashboard tests: condition names with a long common prefix)"
""" + "".join(f'\n[[conditions]]\nname = "{n}"\ncorrupt = "natural/{n}"\n' for n in NATURAL_OPTIONS)

ATTACK_FAMILY = "adv-mini"
ATTACK = f"{ATTACK_FAMILY}/fgsm@1/255"
ATTACK_SUITE = f"""name = "adv-mini"
family = "{ATTACK_FAMILY}"
version = 1
description = "one-step FGSM at eps 1/255 (dashboard tests)"

[[conditions]]
name = "fgsm@1/255"
attack = "fgsm"
eps = "1/255"
seed = 0
"""


def _evaluate(suites: list, out: Path) -> None:
    import robustbench_sys as rbs
    from robustbench_sys.errors import UserError

    try:
        rbs.evaluate(list(MODELS), suites, data="foolbox-demo", out=out, limit=LIMIT, workers=0, progress=False)
    except UserError as e:
        pytest.skip(f"cannot build a real results store here: {e}")


def real_store(tmp_path_factory) -> Path:
    if "root" in _STORE:
        return _STORE["root"]
    base = tmp_path_factory.mktemp("dashboard-store")
    suite = base / "resize-mini.toml"
    suite.write_text(SUITE)
    _evaluate(["clean", str(suite)], base / "results")
    _STORE["root"] = base / "results"
    return _STORE["root"]


def rich_store(tmp_path_factory) -> Path:
    """A copy of :func:`real_store` plus the natural and adversarial conditions (run for real)."""
    if "rich" in _STORE:
        return _STORE["rich"]
    src = real_store(tmp_path_factory)
    base = tmp_path_factory.mktemp("dashboard-rich-store")
    shutil.copytree(src, base / "results")
    (base / "natural-mini.toml").write_text(NATURAL_SUITE)
    (base / "adv-mini.toml").write_text(ATTACK_SUITE)
    _evaluate(["clean", str(base / "natural-mini.toml"), str(base / "adv-mini.toml")], base / "results")
    _STORE["rich"] = base / "results"
    return _STORE["rich"]
