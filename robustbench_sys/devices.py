"""Where the evaluation computes: ``--device cpu|cuda|cuda:N|auto`` resolved in one place.

:func:`resolve_device` turns what the user gave (``evaluate(device=...)``, ``--device``, a
suite's ``device = "..."`` pin) into a concrete device string, or a one-line
:class:`~robustbench_sys.errors.UserError` that says how to fix it:

- nothing given: ``cpu`` (the default, recorded as such);
- ``auto``: ``cuda`` when ``torch.cuda.is_available()``, else ``cpu``; the choice and why are logged;
- ``cuda`` / ``cuda:N``: refused when torch sees no CUDA device, or fewer than N + 1;
- anything else: refused, listing the choices.

What runs where on a CUDA device: model inference (the batch copied from pinned memory with
``non_blocking``), normalisation, softmax, the attacks (``NormalizedModel`` + torchattacks on
the device; the seeds are unchanged) and a transfer attack's source model.  Image decoding,
colour, resize and the natural corruptions stay in the CPU preprocessing workers
(``decoder/nvjpeg`` decodes on the GPU, in this process); int8 / OpenVINO / TorchScript /
torch.compile / torch.export deployments run on the CPU and say so in ``deploy_info``.

A unit's id includes its device only when it is not ``cpu`` (so a CPU run keeps the unit ids
of earlier stores); :func:`device_info` (GPU name, driver, CUDA / cuDNN versions, TF32 and
cuDNN-benchmark flags) goes into the unit spec and the summary's provenance.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import subprocess
from collections.abc import Iterator

from robustbench_sys.errors import UserError

log = logging.getLogger("robustbench_sys.eval")

DEFAULT = "cpu"
CHOICES = "cpu, cuda, cuda:N (N = 0, 1, ...) or auto"
_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def resolve_device(spec: str | None, *, source: str = "--device") -> str:
    """The concrete device (``cpu``, ``cuda``, ``cuda:N``) of ``spec`` (see module doc)."""
    if spec is None:
        return DEFAULT
    s = str(spec).strip().lower()
    if s == "cpu":
        return "cpu"
    if s == "auto":
        import torch

        if torch.cuda.is_available():
            log.info("device auto: CUDA is available (%s); using cuda", torch.cuda.get_device_name(0))
            return "cuda"
        log.info("device auto: no CUDA device (torch.cuda.is_available() is False); using cpu")
        return "cpu"
    m = _CUDA.match(s)
    if not m:
        raise UserError(f"{source} {spec}: unknown device; choose {CHOICES}")
    import torch

    if not torch.cuda.is_available():
        build = ("this torch is a CPU-only build" if torch.version.cuda is None
                 else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU")
        raise UserError(f"{source} {spec}: no CUDA device here ({build}); use --device cpu, or auto to take "
                        "a GPU only where there is one")
    n = torch.cuda.device_count()
    if m.group(1) is not None and int(m.group(1)) >= n:
        raise UserError(f"{source} {spec}: only {n} CUDA device(s) here (cuda:0..cuda:{n - 1}); "
                        "pick one of them or --device cuda")
    return s


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


@contextlib.contextmanager
def reference_flags(device: str) -> Iterator[dict]:
    """The numerics of a unit on ``device``: on a CUDA device strict fp32 (TF32 off for matmuls and
    cuDNN, cuDNN benchmark off; torch's own default turns cuDNN TF32 *on*), restored afterwards.
    A ``device/*`` deploy noise sets its own flags inside.  Yields the flags in force."""
    from robustbench_sys.noises.system.device import flag_state, torch_flags

    if not is_cuda(device):
        yield {}
        return
    with torch_flags(tf32=False, benchmark=False):
        yield flag_state()


def device_info(device: str) -> dict:
    """What identifies the device of a unit: ``{"device": "cpu"}``; for CUDA also the GPU name,
    its compute capability, the driver, CUDA and cuDNN versions and the numerics flags the
    unit runs with (:func:`reference_flags`)."""
    if not is_cuda(device):
        return {"device": device}
    import torch

    idx = torch.device(device).index or 0
    props = torch.cuda.get_device_properties(idx)
    with reference_flags(device) as flags:
        pass
    return {"device": device, "gpu": props.name, "gpu_index": idx,
            "compute_capability": f"{props.major}.{props.minor}",
            "gpu_memory_gib": round(props.total_memory / 2 ** 30, 1), "driver": _driver_version(),
            "cuda_version": torch.version.cuda,
            "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            **flags}


@functools.lru_cache(maxsize=1)
def _driver_version() -> str | None:
    try:
        import warnings

        with warnings.catch_warnings():   # the pynvml wrapper warns that it is deprecated
            warnings.simplefilter("ignore")
            import pynvml

        pynvml.nvmlInit()
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)
    except Exception:   # not installed, or no NVML: ask nvidia-smi
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        return out.splitlines()[0].strip() if out else None
    except (OSError, subprocess.SubprocessError):
        return None


def to_device(x, device: str):
    """A CPU batch on ``device``: from pinned memory with a ``non_blocking`` copy on CUDA."""
    if not is_cuda(device):
        return x
    return x.pin_memory().to(device, non_blocking=True)


def check_onnx_device(model_name: str, device: str) -> None:
    """An ``.onnx`` model on a CUDA device needs ONNX Runtime's CUDA execution provider."""
    if not is_cuda(device):
        return
    providers = onnx_providers()
    if "CUDAExecutionProvider" not in providers:
        raise UserError(f"--model {model_name}: an ONNX model on --device {device} needs ONNX Runtime's "
                        f"CUDAExecutionProvider (pip install onnxruntime-gpu); this ONNX Runtime has "
                        f"{', '.join(providers) or 'none'}; or use --device cpu")


def onnx_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def add_device_option(parser) -> None:
    """``--device`` on a subcommand that evaluates (eval, audit, demo)."""
    parser.add_argument("--device", default=None, metavar="cpu|cuda|cuda:N|auto",
                        help="where models, normalisation and attacks compute (default: the device a suite "
                             "pins, else cpu); auto = cuda when a GPU is visible, else cpu")
