"""Runs the reference ``imagecorruptions`` package inside its own venv (the "oracle").

Standalone script: imports only numpy and imagecorruptions, so that it runs in
``.venvs/imagecorruptions`` (built by scripts/setup.d/50-imagecorruptions-oracle.sh).  The client
is :mod:`robustbench_sys.noises.natural.oracle`.

    python _oracle_worker.py DIR

DIR holds ``images.npy`` (N,H,W,3 uint8) and ``jobs.json`` (a list of
``{"name", "severity", "image", "seed"}``).  For each job the worker calls
``np.random.seed(seed)`` and ``imagecorruptions.corrupt(images[image], severity, name)`` and
writes ``out.npy`` (J,H,W,3 uint8, in job order) and ``seconds.json`` (per-job wall time).

Compatibility shim (the only change to the reference): scikit-image >= 0.20 no longer accepts
``gaussian(..., multichannel=True)``; it is mapped to ``channel_axis=-1``, which is what
scikit-image 0.19's own deprecation wrapper did.
"""

import json
import sys
import time
import warnings

import numpy as np


def main(d: str) -> None:
    warnings.filterwarnings("ignore")
    import imagecorruptions
    from imagecorruptions import corruptions as C

    _gaussian = C.gaussian

    def gaussian(image, *args, multichannel=None, **kwargs):
        if multichannel:
            kwargs["channel_axis"] = -1
        return _gaussian(image, *args, **kwargs)

    C.gaussian = gaussian

    images = np.load(f"{d}/images.npy")
    with open(f"{d}/jobs.json") as f:
        jobs = json.load(f)
    out = np.empty((len(jobs),) + images.shape[1:], np.uint8)
    secs = []
    for k, job in enumerate(jobs):
        np.random.seed(int(job["seed"]))
        t = time.perf_counter()
        out[k] = imagecorruptions.corrupt(images[job["image"]], int(job["severity"]), job["name"])
        secs.append(time.perf_counter() - t)
    np.save(f"{d}/out.npy", out)
    with open(f"{d}/seconds.json", "w") as f:
        json.dump(secs, f)


if __name__ == "__main__":
    main(sys.argv[1])
