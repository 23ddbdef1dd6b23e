"""Backend noise: the same fp32 model run by different inference runtimes.

Stage ``deploy``: ``fn(model, ctx: DeployContext) -> Deployed`` (see
:mod:`robustbench_sys.noises.system.deploy`).  Registered names (family ``backend``):

- ``eager``: PyTorch eager, fp32 (the reference).
- ``torchscript``: ``torch.jit.trace`` + ``torch.jit.freeze`` (folds BN into conv).
- ``torch-compile``: ``torch.compile`` with inductor on the CPU; ``info['compile_s']``
  holds the warm-up (compile) time.
- ``torch-export``: ``torch.export.export`` (dynamic batch) and the ExportedProgram's module.
- ``onnxruntime``: ONNX (torch.onnx dynamo exporter) run by ONNX Runtime's CPU EP, fp32.
- ``openvino``: the ONNX file compiled by OpenVINO for CPU with its *default* precision
  hint.  On CPUs with AVX512-BF16 or AMX the default silently becomes bf16;
  ``info['inference_precision']`` records what OpenVINO resolved.
- ``openvino-f32``: the same with ``INFERENCE_PRECISION_HINT=f32``.
- ``onnxruntime-cuda`` / ``tensorrt``: ONNX Runtime's CUDA / TensorRT execution providers
  (need onnxruntime-gpu and a GPU; ``available()`` says why not otherwise).

Every backend gets :func:`robustbench_sys.noises.system.deploy.num_threads` threads.

Example::

    >>> run = get("backend/onnxruntime")(model, ctx); logits = run(x); run.info["versions"]
"""

from __future__ import annotations

import time
from typing import Any

import torch

from robustbench_sys.noises.io import atomic_path
from robustbench_sys.noises.registry import NotApplicable, register
from robustbench_sys.noises.system.deploy import (
    DeployContext,
    Deployed,
    artefact_dir,
    base_info,
    device_extra,
    example_batch2,
    export_dynamic_batch,
    frozen_copy,
    num_threads,
    on_device,
    onnx_export,
    quiet_exporters,
    torch_versions,
)


# ---------------------------------------------------------------------- availability
def _module_available(mod: str, pip: str) -> str | None:
    """None when ``mod`` imports, else the one-line reason naming the extra that brings it."""
    import importlib.util

    if importlib.util.find_spec(mod) is None:
        return f"{mod} not installed: pip install 'robustbench-sys[backends]' (pins {pip})"
    return None


def ort_available() -> str | None:
    return _module_available("onnxruntime", "onnxruntime==1.31.1") or \
        _module_available("onnxscript", "onnxscript==0.7.2")


def _ov_available() -> str | None:
    return _module_available("openvino", "openvino==2026.4.1") or \
        _module_available("onnxscript", "onnxscript==0.7.2")


def _ort_gpu_available(provider: str):
    def available() -> str | None:
        why = ort_available()
        if why:
            return why
        import onnxruntime as ort

        have = ort.get_available_providers()
        if provider not in have:
            return (f"ONNX Runtime has no {provider} here (providers: {', '.join(have)}); "
                    "needs onnxruntime-gpu and an NVIDIA GPU")
        if not torch.cuda.is_available():
            return f"{provider} is built in but no CUDA GPU is visible"
        return None

    return available


def ort_versions() -> dict:
    import onnx
    import onnxruntime
    import onnxscript

    return {**torch_versions(), "onnx": onnx.__version__, "onnxscript": onnxscript.__version__,
            "onnxruntime": onnxruntime.__version__}


def _ov_versions() -> dict:
    import openvino

    return {**ort_versions(), "openvino": openvino.__version__}


# ---------------------------------------------------------------------- PyTorch backends
@register("backend", "eager", params={"runtime": "torch eager", "dtype": "float32"},
          versions=torch_versions)
def eager(model: torch.nn.Module, ctx: DeployContext) -> Deployed:
    """PyTorch eager, fp32: the reference every other deployment is compared with (on ``ctx.device``)."""
    m = frozen_copy(model).to(ctx.device)
    return Deployed(on_device(m, ctx.device), base_info("torch-eager", torch_versions(), {"dtype": "float32"},
                                                         **device_extra(ctx.device)), keep=m)


@register("backend", "torchscript",
          params={"runtime": "torch.jit", "trace": True, "freeze": True}, versions=torch_versions)
def torchscript(model: torch.nn.Module, ctx: DeployContext) -> Deployed:
    """torch.jit.trace + torch.jit.freeze (constant folding, conv-BN folding), cached."""
    path = artefact_dir(model, ctx) / "torchscript-frozen.pt"
    cached = path.exists()
    t = time.perf_counter()
    if cached:
        sm = torch.jit.load(str(path), map_location="cpu")
    else:
        with torch.no_grad(), quiet_exporters():
            sm = torch.jit.freeze(torch.jit.trace(frozen_copy(model), example_batch2(ctx.example_input)))
        with atomic_path(path) as tmp:
            torch.jit.save(sm, str(tmp))
    sm.eval()
    return Deployed(sm, base_info("torchscript", torch_versions(),
                                  {"trace": True, "freeze": True, "dtype": "float32"},
                                  artefact=str(path), export_cached=cached,
                                  load_s=round(time.perf_counter() - t, 2)))


@register("backend", "torch-compile",
          params={"runtime": "torch.compile", "backend": "inductor", "mode": "default"},
          versions=torch_versions)
def torch_compile(model: torch.nn.Module, ctx: DeployContext) -> Deployed:
    """torch.compile(backend="inductor") on the CPU; compiled (and timed) on the example input.

    Not cached as an artefact (inductor keeps its own on-disk cache).  A new batch size
    triggers one recompile with a dynamic batch dim.
    """
    m = torch.compile(frozen_copy(model), backend="inductor")
    t = time.perf_counter()
    with torch.inference_mode(), quiet_exporters():  # the mode Deployed calls it in: no recompile
        m(ctx.example_input)
    compile_s = time.perf_counter() - t
    return Deployed(m, base_info("torch-compile", torch_versions(),
                                 {"backend": "inductor", "mode": "default", "dtype": "float32"},
                                 compile_s=round(compile_s, 2)))


#: read by the tests only: a new batch size recompiles (slow), so no batch-1 check
torch_compile.test_settings = {"rebatch": False}


@register("backend", "torch-export",
          params={"runtime": "torch.export", "dynamic_batch": True}, versions=torch_versions)
def torch_export(model: torch.nn.Module, ctx: DeployContext) -> Deployed:
    """torch.export.export (dynamic batch) and the ExportedProgram's ``.module()``, cached (.pt2)."""
    path = artefact_dir(model, ctx) / "exported.pt2"
    cached = path.exists()
    if cached:
        ep = torch.export.load(str(path))
    else:
        with quiet_exporters():
            ep = export_dynamic_batch(frozen_copy(model), ctx.example_input)
        with atomic_path(path) as tmp:
            torch.export.save(ep, str(tmp))
    return Deployed(ep.module(), base_info("torch-export", torch_versions(),
                                           {"dynamic_batch": True, "dtype": "float32"},
                                           artefact=str(path), export_cached=cached))


# ---------------------------------------------------------------------- ONNX Runtime
def ort_session(path, providers: list, *, expect: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = num_threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=providers)
    if expect and expect not in sess.get_providers():
        raise RuntimeError(f"ONNX Runtime fell back to {sess.get_providers()} instead of {expect}")
    return sess


def ort_deployed(sess, info: dict) -> Deployed:
    name = sess.get_inputs()[0].name

    def run(x: torch.Tensor):
        return sess.run(None, {name: x.numpy()})[0]

    info = {**info, "providers": sess.get_providers(),
            "graph_optimization_level": "ORT_ENABLE_ALL"}
    return Deployed(run, info, keep=sess)


@register("backend", "onnxruntime",
          params={"runtime": "onnxruntime", "provider": "CPUExecutionProvider", "dtype": "float32"},
          available=ort_available, versions=ort_versions)
def onnxruntime_cpu(model: torch.nn.Module, ctx: DeployContext) -> Deployed:
    """ONNX (dynamo exporter, cached) on ONNX Runtime's CPU execution provider, fp32; on a
    ``--device cuda`` run its CUDA execution provider, or not applicable (one line) without it."""
    if ctx.device.startswith("cuda"):
        why = _ort_gpu_available("CUDAExecutionProvider")()
        if why:
            raise NotApplicable(f"backend/onnxruntime on --device {ctx.device}: {why}")
        path, einfo = onnx_export(model, ctx)
        idx = int(ctx.device.split(":", 1)[1]) if ":" in ctx.device else 0
        sess = ort_session(path, [("CUDAExecutionProvider", {"device_id": idx})], expect="CUDAExecutionProvider")
        return ort_deployed(sess, base_info("onnxruntime", ort_versions(),
                                            {"dtype": "float32", "provider": "CUDAExecutionProvider"},
                                            **einfo, device=ctx.device))
    path, einfo = onnx_export(model, ctx)
    sess = ort_session(path, ["CPUExecutionProvider"], expect="CPUExecutionProvider")
    return ort_deployed(sess, base_info("onnxruntime", ort_versions(), {"dtype": "float32"}, **einfo))


def _make_ort_gpu(provider: str):
    def deploy(model: torch.nn.Module, ctx: DeployContext) -> Deployed:
        why = _ort_gpu_available(provider)()
        if why:
            raise RuntimeError(why)
        path, einfo = onnx_export(model, ctx)
        providers = [provider, "CUDAExecutionProvider"] if provider != "CUDAExecutionProvider" \
            else [provider]
        sess = ort_session(path, providers, expect=provider)
        return ort_deployed(sess, base_info("onnxruntime", ort_versions(),
                                            {"dtype": "float32", "provider": provider}, **einfo))

    deploy.__doc__ = f"ONNX Runtime with the {provider} (GPU), fp32 model."
    return deploy


register("backend", "onnxruntime-cuda",
         params={"runtime": "onnxruntime", "provider": "CUDAExecutionProvider"},
         available=_ort_gpu_available("CUDAExecutionProvider"),
         versions=ort_versions)(_make_ort_gpu("CUDAExecutionProvider"))
register("backend", "tensorrt",
         params={"runtime": "onnxruntime", "provider": "TensorrtExecutionProvider"},
         available=_ort_gpu_available("TensorrtExecutionProvider"),
         versions=ort_versions)(_make_ort_gpu("TensorrtExecutionProvider"))


# ---------------------------------------------------------------------- OpenVINO
_OV_PRECISION = {"f32": "f32", "float32": "f32", "bf16": "bf16", "bfloat16": "bf16",
                 "f16": "f16", "float16": "f16"}


def openvino_deployed(onnx_path, config: dict, info: dict) -> Deployed:
    """Compile an ONNX file with OpenVINO on CPU; record the resolved precision hint."""
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": num_threads(), **config}
    compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", config)
    resolved = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    resolved = _OV_PRECISION.get(resolved.split("'")[1] if "'" in resolved else resolved, resolved)
    request = compiled.create_infer_request()

    def run(x: torch.Tensor):
        return request.infer({0: x.numpy()})[compiled.output(0)]

    info = {**info, "inference_precision": resolved,
            "execution_mode": str(compiled.get_property("EXECUTION_MODE_HINT")),
            "device_capabilities": list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))}
    return Deployed(run, info, keep=(core, compiled))


def _make_openvino(hint: str | None):
    def deploy(model: torch.nn.Module, ctx: DeployContext) -> Deployed:
        path, einfo = onnx_export(model, ctx)
        config = {"INFERENCE_PRECISION_HINT": hint} if hint else {}
        settings = {"precision_hint": hint or "default", "source": "onnx"}
        return openvino_deployed(path, config, base_info("openvino", _ov_versions(), settings, **einfo))

    deploy.__doc__ = ("OpenVINO CPU with the default precision hint (bf16 on AVX512-BF16/AMX CPUs)."
                      if hint is None else f"OpenVINO CPU with INFERENCE_PRECISION_HINT={hint}.")
    if hint is None:  # read by the tests only: the default hint may resolve to bf16 / f16
        fn: Any = deploy  # a function attribute, which Callable types do not declare
        fn.test_settings = {"may_lower_precision": True, "rebatch_atol": 0.5}
    return deploy


register("backend", "openvino",
         params={"runtime": "openvino", "device": "CPU", "precision_hint": "default"},
         available=_ov_available, versions=_ov_versions)(_make_openvino(None))
register("backend", "openvino-f32",
         params={"runtime": "openvino", "device": "CPU", "precision_hint": "f32"},
         available=_ov_available, versions=_ov_versions)(_make_openvino("f32"))
