"""A model's accuracy on our ImageNet-C corruptions equals its accuracy on the reference
``imagecorruptions`` 1.1.2 outputs within the sampling interval: MobileNetV2 (its own pipeline
is ImageNet-C's PIL Resize(256) -> CenterCrop(224)) on real ImageNet JPEGs that no other
natural-noise test uses, one deterministic and several random corruptions.

For each corruption: the paired bootstrap 95% interval of ACC(ours) - ACC(reference) over the
same images contains 0; for deterministic corruptions (same pixels up to ±1 rounding) the two
top-1 predictions also agree on nearly every image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustbench_sys import zoo
from robustbench_sys.metrics import paired as metrics
from robustbench_sys.noises.natural import CORRUPTIONS, corrupt, oracle
from robustbench_sys.pipeline import Pipeline

N, FIRST = 48, 100            # shared-sample images 100..147 (test_natural_faithful uses the first 3)
CASES = [("defocus_blur", 3), ("gaussian_noise", 3), ("fog", 3), ("motion_blur", 2), ("snow", 2)]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(imagenet_sample, sample_rows):
    why = oracle.unavailable()
    if why:
        pytest.skip(f"reference imagecorruptions oracle: {why}")
    card = zoo.get_card("mobilenet_v2")
    try:
        model = zoo.load_model(card)
    except zoo.WeightsUnavailable as e:
        pytest.skip(str(e))
    pipe = Pipeline.from_card(card)
    rows = sample_rows[FIRST:FIRST + N]
    crops = np.stack([pipe.preprocess_crop((imagenet_sample / r["file"]).read_bytes()) for r in rows])
    labels = np.array([int(r["class_index"]) for r in rows])
    jobs = [{"name": n, "severity": s, "image": i, "seed": 10_000 + 97 * k + i}
            for k, (n, s) in enumerate(CASES) for i in range(N)]
    ref, _ = oracle.run(crops, jobs)
    return model, pipe, crops, labels, {c: ref[k * N:(k + 1) * N] for k, c in enumerate(CASES)}


def _predict(model, pipe, imgs: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(255)
    with torch.inference_mode():
        return model(pipe.normalise(x)).argmax(1).numpy()


@pytest.mark.parametrize("name,severity", CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_accuracy_agrees_with_reference(name, severity, setup):
    model, pipe, crops, labels, refs = setup
    ours = np.stack([corrupt(img, name, severity, seed=500 + i) for i, img in enumerate(crops)])
    p_ours, p_ref = _predict(model, pipe, ours), _predict(model, pipe, refs[name, severity])
    p_clean = _predict(model, pipe, crops)
    d = metrics.paired_delta(p_ref == labels, p_ours == labels)
    print(f"{name}-{severity}: clean {(p_clean == labels).mean():.3f} ours {d.acc:.3f} reference {d.ref_acc:.3f} "
          f"CI [{d.ci_low:+.3f}, {d.ci_high:+.3f}] same top-1 {(p_ours == p_ref).mean():.3f}")
    assert d.ci_low <= 0 <= d.ci_high, (f"{name}-{severity}: ACC ours {d.acc:.3f} vs reference "
                                       f"{d.ref_acc:.3f}, 95% CI of the difference [{d.ci_low:+.3f}, {d.ci_high:+.3f}]")
    # the corruption really bites (else the comparison would say nothing)
    assert (p_ref != p_clean).mean() > 0.05 or d.ref_acc < (p_clean == labels).mean()
    if not CORRUPTIONS[name].random:
        assert (p_ours == p_ref).mean() >= 0.95
