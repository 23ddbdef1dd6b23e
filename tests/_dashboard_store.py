"""One real results store per test session, shared by tests/test_dashboard*.py.

Built once by running the evaluator on real images (the foolbox demo set: mobilenet_v2 and
tf_efficientnet_lite0, clean + a three-option resize suite, 6 images).  Skips when the demo
set or the offline weights are not in the cache (scripts/setup.sh fetches them).
"""

from __future__ import annotations

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


def real_store(tmp_path_factory) -> Path:
    if "root" in _STORE:
        return _STORE["root"]
    import robustbench_sys as rbs
    from robustbench_sys.errors import UserError

    base = tmp_path_factory.mktemp("dashboard-store")
    suite = base / "resize-mini.toml"
    suite.write_text(SUITE)
    try:
        rbs.evaluate(list(MODELS), ["clean", str(suite)], data="foolbox-demo", out=base / "results",
                     limit=LIMIT, workers=0, progress=False, )
    except UserError as e:
        pytest.skip(f"cannot build a real results store here: {e}")
    _STORE["root"] = base / "results"
    return _STORE["root"]
