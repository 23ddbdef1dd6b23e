"""Device noise: the same fp32 model on another device, or with the device's fast-math settings.

Stage ``deploy`` (family ``device``): ``fn(model, ctx: DeployContext) -> Deployed`` (see
:mod:`robustbench_sys.noises.system.deploy`).  Each condition is compared, like every deploy
noise, with the model's reference unit on the run's device (``--device``, default the CPU):

- ``cuda-fp32``: the same fp32 model on the GPU, TF32 off, cuDNN benchmark off (strict fp32).
  On a ``--device cuda`` run this *is* the reference, and the planner skips it.
- ``tf32``: GPU, ``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32`` on.
- ``cudnn-benchmark``: GPU, ``torch.backends.cudnn.benchmark`` on (cuDNN times its algorithms
  and keeps the fastest; the choice may change the numerics), TF32 off.
- ``autocast-fp16`` / ``autocast-bf16``: GPU, ``torch.autocast("cuda", dtype=...)`` (mixed
  precision: matmuls / convs in fp16 / bf16, reductions in fp32).
- ``half``: GPU, ``model.half()`` and half inputs (every op in fp16).
- ``autocast-bf16-cpu``: ``torch.autocast("cpu", dtype=torch.bfloat16)`` on the CPU (runs
  everywhere; the CPU counterpart of ``autocast-bf16``).

Against a CPU reference a GPU condition measures device + setting together; run with
``--device cuda`` to compare each setting with the strict-fp32 GPU reference.

The global flags a condition needs (TF32, cuDNN benchmark) are set around every call of the
deployed model by :func:`torch_flags` and restored afterwards, so no other unit sees them;
``info['settings']`` records them and ``info['device']`` where the model ran.  The GPU
conditions' ``available()`` says what is missing ("needs a CUDA GPU ...").

Example::

    >>> run = get("device/autocast-bf16-cpu")(model, ctx); logits = run(x); run.info["settings"]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from robustbench_sys.noises.registry import register
from robustbench_sys.noises.system.deploy import DeployContext, Deployed, base_info, frozen_copy, torch_versions

__all__ = ["torch_flags", "flag_state", "cuda_unavailable", "cuda_versions"]


def flag_state() -> dict:
    """The global numerics flags in force now (recorded with every unit run on a device)."""
    return {"tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic)}


@contextlib.contextmanager
def torch_flags(*, tf32: bool | None = None, benchmark: bool | None = None) -> Iterator[dict]:
    """Set the TF32 (matmul + cuDNN) and cuDNN-benchmark flags for the block, restore them after
    (None leaves a flag as it is).  Yields the flags in force inside the block."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        if tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        if benchmark is not None:
            torch.backends.cudnn.benchmark = benchmark
        yield flag_state()
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = saved


def cuda_unavailable() -> str | None:
    """None when a CUDA GPU is usable, else the one-line reason."""
    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
        return f"needs a CUDA GPU (torch.cuda.is_available() is False; {build})"
    return None


def _bf16_unavailable() -> str | None:
    why = cuda_unavailable()
    if why:
        return why
    if not torch.cuda.is_bf16_supported():
        return f"needs a GPU with bf16 support ({torch.cuda.get_device_name(0)} has none)"
    return None


def cuda_versions() -> dict:
    out = {**torch_versions(), "cuda": torch.version.cuda}
    if torch.backends.cudnn.is_available():
        out["cudnn"] = torch.backends.cudnn.version()
    return out


def _gpu(ctx: DeployContext) -> str:
    """The GPU of the run: ``ctx.device`` when it is a CUDA device, else ``cuda`` (the current one)."""
    return ctx.device if str(ctx.device).startswith("cuda") else "cuda"


def _make(label: str, *, tf32: bool = False, benchmark: bool = False, autocast: torch.dtype | None = None,
          half: bool = False, cpu: bool = False):
    def deploy(model: torch.nn.Module, ctx: DeployContext) -> Deployed:
        dev = "cpu" if cpu else _gpu(ctx)
        if not cpu:
            why = cuda_unavailable()
            if why:
                raise RuntimeError(f"device/{label}: {why}")
        m = frozen_copy(model).to(dev)
        if half:
            m = m.half()
        kind = "cpu" if cpu else "cuda"

        def run(x: torch.Tensor) -> torch.Tensor:
            xd = x.to(dev, non_blocking=True)
            if half:
                xd = xd.half()
            with torch_flags(tf32=None if cpu else tf32, benchmark=None if cpu else benchmark):
                if autocast is not None:
                    with torch.autocast(kind, dtype=autocast):
                        return m(xd).float()
                return m(xd).float()

        settings: dict = {"device": dev, "dtype": "float16" if half else "float32",
                    "autocast": str(autocast).replace("torch.", "") if autocast is not None else None}
        if not cpu:
            settings.update({"tf32_matmul": tf32, "tf32_cudnn": tf32, "cudnn_benchmark": benchmark})
        extra = {"device": dev}
        if not cpu:
            extra["gpu"] = torch.cuda.get_device_name(torch.device(dev))
        return Deployed(run, base_info("torch-eager", cuda_versions() if not cpu else torch_versions(),
                                       settings, **extra), keep=m)

    return deploy


def _register(name: str, available, *, numerics: str, device: str, doc: str, **kw):
    fn = _make(name, cpu=device == "cpu", **kw)
    fn.__doc__ = doc
    params = {"device": device, "numerics": numerics}
    register("device", name, params=params, available=available,
             versions=cuda_versions if device == "cuda" else torch_versions,
             tags={"device": device, "numerics": numerics})(fn)


_register("cuda-fp32", cuda_unavailable, numerics="fp32", device="cuda",
          doc="The same fp32 model on the GPU (TF32 off, cuDNN benchmark off).")
_register("tf32", cuda_unavailable, numerics="tf32", device="cuda", tf32=True,
          doc="GPU with TF32 matmuls and cuDNN convolutions (allow_tf32 on).")
_register("cudnn-benchmark", cuda_unavailable, numerics="fp32-benchmark", device="cuda", benchmark=True,
          doc="GPU with cuDNN benchmark mode on (fastest algorithm chosen by timing), TF32 off.")
_register("autocast-fp16", cuda_unavailable, numerics="autocast-fp16", device="cuda", autocast=torch.float16,
          doc="GPU under torch.autocast('cuda', dtype=torch.float16) (mixed precision).")
_register("autocast-bf16", _bf16_unavailable, numerics="autocast-bf16", device="cuda", autocast=torch.bfloat16,
          doc="GPU under torch.autocast('cuda', dtype=torch.bfloat16) (mixed precision).")
_register("half", cuda_unavailable, numerics="fp16", device="cuda", half=True,
          doc="GPU with model.half() and half inputs (every op in fp16).")
_register("autocast-bf16-cpu", lambda: None, numerics="autocast-bf16", device="cpu", autocast=torch.bfloat16,
          doc="CPU under torch.autocast('cpu', dtype=torch.bfloat16) (mixed precision).")
