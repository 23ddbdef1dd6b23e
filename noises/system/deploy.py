"""The ``deploy`` stage: what the model runs on (precision, backend), and its shared parts.

A deploy noise has the signature ``fn(model, ctx) -> Deployed``:

- ``model``: a ``torch.nn.Module`` in eval mode, float32, on the CPU (never modified);
- ``ctx``: a :class:`DeployContext` (example input, calibration batches, artefact cache);
- the result: a :class:`Deployed`, callable on a normalised float32 NCHW batch and returning
  float32 logits ``(N, classes)`` on the CPU, with ``.info`` saying what actually ran
  (toolchain, versions, the settings used, e.g. OpenVINO's resolved inference precision).

Exported artefacts (ONNX files, TorchScript, ExportedPrograms, quantised ONNX) are cached
under ``ctx.cache_dir / <model_key>-<fingerprint> / ...``.  The fingerprint hashes the
weights *and* every module's plain attributes (``ceil_mode``, an upsample ``mode``), so a
graph-changed model never reuses the unchanged model's export.

Example::

    >>> from robustbench_sys.noises import get
    >>> from robustbench_sys.noises.system.deploy import DeployContext
    >>> ctx = DeployContext(example_input=x, calibration=lambda: calib_batches,
    ...                     cache_dir=Path("~/.cache/rbs/deploy").expanduser(), model_key="mobilenet_v2")
    >>> run = get("backend/openvino")(model, ctx)
    >>> logits = run(x)                 # (N, 1000) float32
    >>> run.info["inference_precision"] # 'bf16' on CPUs with AVX512-BF16 / AMX
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import platform
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from robustbench_sys.noises.io import atomic_path

__all__ = ["DeployContext", "Deployed", "model_fingerprint", "artefact_dir", "onnx_export",
           "torch_versions", "num_threads", "on_device", "device_extra"]

#: ONNX opset used by every ONNX export (torch.onnx dynamo exporter's default in torch 2.14)
ONNX_OPSET = 18


@dataclass
class DeployContext:
    """What a deploy noise may use besides the model.

    Args:
        example_input: a normalised float32 NCHW batch of the evaluation's shape (values do
            not matter; used for tracing / export / warm-up).
        calibration: a callable returning an iterable of normalised float32 NCHW batches
            for post-training quantisation.  They must come from images DISJOINT from the
            evaluation images; the caller records which in ``calibration_id``.
        cache_dir: where exported artefacts are cached (per model key + fingerprint +
            settings) and reused; None exports into a temporary folder every time.
        device: where the evaluation computes (``cpu``, ``cuda``, ``cuda:N``: ``--device``).  The
            eager fp32 / bf16 / fp16 noises, the ``device/*`` family and ``backend/onnxruntime``
            (CUDA execution provider) follow it; the others run on the CPU and leave
            ``info["device"]`` unset, which the evaluator records as ``cpu``.
        model_key: names the model in the cache (e.g. the zoo card name).
        calibration_id: a short string naming the calibration set (e.g. a hash of its
            file list); part of the cache key of quantised artefacts and of ``info``.
    """

    example_input: torch.Tensor
    calibration: Callable[[], Iterable[torch.Tensor]] | None = None
    cache_dir: Path | str | None = None
    device: str = "cpu"
    model_key: str = "model"
    calibration_id: str = ""
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        x = self.example_input
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.dtype != torch.float32:
            raise ValueError("DeployContext.example_input must be a float32 NCHW tensor, got "
                             f"{getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}")

    def calibration_batches(self, noise: str) -> list[torch.Tensor]:
        """The calibration batches as a list (float32 CPU); a clear error when missing."""
        if self.calibration is None:
            raise ValueError(f"{noise} needs calibration data: pass DeployContext(calibration=...) "
                             "returning normalised batches of images disjoint from the evaluation set")
        batches = [torch.as_tensor(b).float().cpu() for b in self.calibration()]
        if not batches:
            raise ValueError(f"{noise}: DeployContext.calibration returned no batches")
        return batches

    def calibration_info(self, batches: list[torch.Tensor]) -> dict:
        return {"calibration_batches": len(batches),
                "calibration_images": int(sum(b.shape[0] for b in batches)),
                "calibration_id": self.calibration_id}

    def root(self) -> Path:
        if self.cache_dir is None:
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="rbs-deploy-")
            return Path(self._tmp.name)
        return Path(self.cache_dir).expanduser()


class Deployed:
    """A deployed model: ``deployed(x) -> logits`` (float32, CPU) plus ``.info``.

    ``run`` gets the float32 CPU batch and may return any tensor / ndarray; the result is
    converted to a float32 CPU tensor.  Calls run under ``torch.inference_mode``.
    """

    def __init__(self, run: Callable, info: dict, keep: object = None):
        self._run = run
        self.info = info
        self._keep = keep  # objects (sessions, temp dirs) that must outlive the callable

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"deployed model expects an NCHW batch, got shape {tuple(x.shape)}")
        with torch.inference_mode():
            out = self._run(x.detach().float().cpu().contiguous())
        out = torch.as_tensor(out)
        return out.float().cpu()

    def __repr__(self) -> str:
        return f"Deployed({self.info.get('toolchain', '?')}, {self.info.get('settings', {})})"


# ---------------------------------------------------------------------- helpers
def torch_versions() -> dict:
    return {"torch": torch.__version__}


def num_threads() -> int:
    """Threads every backend is given: torch's intra-op count, so runtimes compare fairly."""
    return torch.get_num_threads()


def model_fingerprint(model: torch.nn.Module) -> str:
    """Hash of weights, buffers and each module's plain attributes (types, ceil_mode, ...)."""
    h = hashlib.sha256()
    for name, mod in model.named_modules():
        attrs = sorted((k, repr(v)) for k, v in vars(mod).items()
                       if not k.startswith("_") and isinstance(v, (bool, int, float, str, tuple, type(None))))
        h.update(f"{name}:{type(mod).__qualname__}:{attrs}".encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                 if t.numel() else b"")
    return h.hexdigest()[:16]


def artefact_dir(model: torch.nn.Module, ctx: DeployContext) -> Path:
    """``<cache>/<model_key>-<fingerprint>/`` (created)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in ctx.model_key) or "model"
    d = ctx.root() / f"{safe}-{model_fingerprint(model)}"
    d.mkdir(parents=True, exist_ok=True)
    return d



def example_batch2(x: torch.Tensor) -> torch.Tensor:
    """An example batch of at least 2 (batch 1 would specialise the batch dim in export)."""
    return x[:1].expand(2, *x.shape[1:]).contiguous() if x.shape[0] < 2 else x


def batch_dim():
    return torch.export.Dim("batch", min=1, max=4096)


def export_dynamic_batch(module: torch.nn.Module, example_input: torch.Tensor):
    """``torch.export.export`` of ``module`` traced on ``example_batch2(example_input)`` with a
    dynamic batch dim (:func:`batch_dim`); returns the ExportedProgram."""
    return torch.export.export(module, (example_batch2(example_input),), dynamic_shapes=({0: batch_dim()},))


def onnx_export(model: torch.nn.Module, ctx: DeployContext) -> tuple[Path, dict]:
    """fp32 ONNX file of ``model`` with a dynamic batch dim, cached; returns (path, info).

    Uses the torch.onnx dynamo exporter (``dynamo=True``, the default in torch 2.14; the
    legacy TorchScript exporter is deprecated), opset :data:`ONNX_OPSET`, weights inline.
    """
    path = artefact_dir(model, ctx) / f"model-opset{ONNX_OPSET}.onnx"
    info = {"onnx_exporter": "torch.onnx.export(dynamo=True)", "onnx_opset": ONNX_OPSET,
            "onnx_path": str(path)}
    if path.exists():
        return path, {**info, "export_cached": True}
    import onnx  # noqa: F401  (clear ImportError before the exporter's own)
    t = time.perf_counter()
    with atomic_path(path) as tmp, quiet_exporters():
        torch.onnx.export(model, (example_batch2(ctx.example_input),), str(tmp), dynamo=True,
                          opset_version=ONNX_OPSET, input_names=["input"], output_names=["logits"],
                          dynamic_shapes=({0: batch_dim()},), external_data=False,
                          verbose=False)
    return path, {**info, "export_cached": False, "export_s": round(time.perf_counter() - t, 2)}


@contextlib.contextmanager
def quiet_exporters():
    """Silence exporters' progress prints and warnings (not errors)."""
    import io
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def base_info(toolchain: str, versions: dict, settings: dict, **extra) -> dict:
    return {"toolchain": toolchain, "versions": versions, "settings": settings,
            "threads": num_threads(), "cpu": cpu_name(), **extra}


def on_device(m: torch.nn.Module, device: str):
    """A callable running ``m`` (already on ``device``) on a CPU batch copied to ``device``."""
    if device == "cpu":
        return m

    def run(x: torch.Tensor) -> torch.Tensor:
        return m(x.to(device, non_blocking=True))

    return run


def device_extra(device: str) -> dict:
    """``info`` fields of a deployment that runs on ``device``: nothing on the CPU (as before);
    on a GPU ``device`` and the GPU's name."""
    if device == "cpu":
        return {}
    return {"device": device, "gpu": torch.cuda.get_device_name(torch.device(device))}


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy in eval mode with gradients off (deploy noises never touch the input)."""
    m = copy.deepcopy(model).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m
