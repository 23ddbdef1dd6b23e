"""Precision noise: the same model run at lower numerical precision.

Stage ``deploy``: ``fn(model, ctx: DeployContext) -> Deployed`` (see
:mod:`robustbench_sys.noises.system.deploy`).  Registered names (family ``precision``):

- ``fp32``: PyTorch eager float32 (the reference; the same as ``backend/eager``).
- ``bf16`` / ``fp16``: every weight and activation cast (``model.to(dtype)``), eager on the
  CPU (slow where the CPU lacks native fp16 arithmetic; the numerics are what matter here).
- ``int8-pt2e``: post-training static quantisation with PyTorch 2 export (torchao's
  ``prepare_pt2e`` / ``convert_pt2e``) and ``X86InductorQuantizer`` (u8 activations
  per-tensor, s8 weights per-channel, histogram observers), lowered by ``torch.compile``
  (inductor, ``freezing=True``) to oneDNN int8 kernels: what an x86 deployment runs.
- ``int8-pt2e-eager``: the same quantised graph run eagerly (quantize/dequantize pairs in
  float32, i.e. the reference int8 numerics without the inductor lowering).
- ``int8-ort-qdq``: ONNX Runtime static quantisation, QDQ format, u8 activations / s8
  weights per-channel, MinMax calibration, run by the CPU execution provider.

The int8 noises calibrate on ``ctx.calibration()`` (images disjoint from the evaluation set;
SysNoise's INT8 is ``clip(round(x / s) + z)``); ``info`` records how many batches/images and
``ctx.calibration_id``.

Example::

    >>> run = get("precision/int8-ort-qdq")(model, ctx); logits = run(x); run.info["settings"]
"""

from __future__ import annotations

import hashlib
import time

import torch

from robustbench_sys.noises.io import atomic_path
from robustbench_sys.noises.registry import register
from robustbench_sys.noises.system.backend import ort_available, ort_deployed, ort_session, ort_versions
from robustbench_sys.noises.system.deploy import (
    DeployContext,
    Deployed,
    artefact_dir,
    base_info,
    device_extra,
    export_dynamic_batch,
    frozen_copy,
    on_device,
    onnx_export,
    quiet_exporters,
    torch_versions,
)


# ---------------------------------------------------------------------- float
@register("precision", "fp32", params={"dtype": "float32", "runtime": "torch eager"},
          versions=torch_versions)
def fp32(model: torch.nn.Module, ctx: DeployContext) -> Deployed:
    """PyTorch eager float32: the reference precision (on ``ctx.device``)."""
    m = frozen_copy(model).to(ctx.device)
    return Deployed(on_device(m, ctx.device), base_info("torch-eager", torch_versions(), {"dtype": "float32"},
                                                         **device_extra(ctx.device)), keep=m)


#: read by the tests only: the reference precision equals eager exactly
fp32.test_settings = {"exact": True}


def _make_cast(dtype: torch.dtype, label: str):
    def deploy(model: torch.nn.Module, ctx: DeployContext) -> Deployed:
        m = frozen_copy(model).to(ctx.device).to(dtype)

        def run(x: torch.Tensor) -> torch.Tensor:
            return m(x.to(ctx.device).to(dtype))

        return Deployed(run, base_info("torch-eager", torch_versions(),
                                       {"dtype": label, "method": f"model.to({dtype}); input cast"},
                                       **device_extra(ctx.device)),
                        keep=m)

    deploy.__doc__ = f"Weights and activations cast to {label}, PyTorch eager on ``ctx.device`` (the CPU by default)."
    return deploy


register("precision", "bf16", params={"dtype": "bfloat16", "method": "cast"},
         versions=torch_versions)(_make_cast(torch.bfloat16, "bfloat16"))
register("precision", "fp16", params={"dtype": "float16", "method": "cast"},
         versions=torch_versions)(_make_cast(torch.float16, "float16"))


# ---------------------------------------------------------------------- PT2E (torchao)
def _torchao_available() -> str | None:
    import importlib.util

    if importlib.util.find_spec("torchao") is None:
        return "torchao not installed: pip install 'robustbench-sys[backends]' (pins torchao==0.18.0)"
    return None


def _torchao_versions() -> dict:
    import torchao

    return {**torch_versions(), "torchao": torchao.__version__}


_PT2E_SETTINGS = {"quantizer": "X86InductorQuantizer",
                  "config": "get_default_x86_inductor_quantization_config()",
                  "activations": "uint8 per-tensor (HistogramObserver)",
                  "weights": "int8 per-channel symmetric", "is_qat": False}


def _calibration_hash(batches: list[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for b in batches:
        h.update(str(tuple(b.shape)).encode())
        h.update(b.contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def _pt2e_quantize(model: torch.nn.Module, ctx: DeployContext, noise: str):
    """Export -> prepare_pt2e -> calibrate -> convert_pt2e; returns (GraphModule, info).

    The converted graph is re-exported and cached (``.pt2``) per model fingerprint and
    calibration data, so ``int8-pt2e`` and ``int8-pt2e-eager`` share one calibration.
    """
    # importing torchao's pt2e registers the quantized_decomposed ops a cached .pt2 refers to
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    batches = ctx.calibration_batches(noise)
    path = artefact_dir(model, ctx) / f"int8-pt2e-x86inductor-{_calibration_hash(batches)}.pt2"
    info = {**ctx.calibration_info(batches), "quantized_path": str(path), "quantize_cached": path.exists()}
    t = time.perf_counter()
    if path.exists():
        with quiet_exporters():
            gm = torch.export.load(str(path)).module()
        return gm, {**info, "quantize_s": round(time.perf_counter() - t, 2)}

    with quiet_exporters():
        gm = export_dynamic_batch(frozen_copy(model), ctx.example_input).module()
        quantizer = X86InductorQuantizer()
        quantizer.set_global(get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(gm, quantizer)
        with torch.no_grad():
            for b in batches:
                prepared(b)
        converted = convert_pt2e(prepared)
        ep = export_dynamic_batch(converted, ctx.example_input)
        with atomic_path(path) as tmp:
            torch.export.save(ep, str(tmp))
    return ep.module(), {**info, "quantize_s": round(time.perf_counter() - t, 2)}


def _register_pt2e(name: str, lowering: str):
    """``register`` of a PT2E int8 noise; ``lowering`` says what runs the quantised graph."""
    return register("precision", name,
                    params={"dtype": "int8", "method": "pt2e static PTQ", "quantizer": "X86InductorQuantizer",
                            "lowering": lowering},
                    available=_torchao_available, versions=_torchao_versions)


@_register_pt2e("int8-pt2e", "torch.compile inductor freezing")
def int8_pt2e(model: torch.nn.Module, ctx: DeployContext) -> Deployed:
    """PT2E static int8 (X86InductorQuantizer), lowered by inductor to oneDNN int8 kernels."""
    converted, cinfo = _pt2e_quantize(model, ctx, "precision/int8-pt2e")
    import torch._inductor.config as inductor_config

    # freezing must be on whenever inductor compiles (also a recompile for a new batch size);
    # torch.compile(options={"freezing": True}) fails on onednn.qconv_prepack in torch 2.14, the
    # config patch works.  dynamic=False: a new batch size compiles once more (static shapes).
    compiled = torch.compile(converted, backend="inductor", dynamic=False)

    def run(x: torch.Tensor) -> torch.Tensor:
        with inductor_config.patch(freezing=True):
            return compiled(x)

    t = time.perf_counter()
    with torch.inference_mode(), quiet_exporters():
        run(ctx.example_input)
    settings = {**_PT2E_SETTINGS, "lowering": "torch.compile(inductor, freezing=True, dynamic=False)"}
    return Deployed(run, base_info("torchao-pt2e+inductor", _torchao_versions(), settings, **cinfo,
                                   compile_s=round(time.perf_counter() - t, 2)),
                    keep=compiled)


@_register_pt2e("int8-pt2e-eager", "none (reference q/dq in float32)")
def int8_pt2e_eager(model: torch.nn.Module, ctx: DeployContext) -> Deployed:
    """PT2E static int8 (X86InductorQuantizer), the quantised graph run eagerly (q/dq simulated)."""
    converted, cinfo = _pt2e_quantize(model, ctx, "precision/int8-pt2e-eager")
    return Deployed(converted, base_info("torchao-pt2e", _torchao_versions(),
                                         {**_PT2E_SETTINGS, "lowering": "none (eager q/dq)"}, **cinfo))


# ---------------------------------------------------------------------- ONNX Runtime QDQ
_ORT_QDQ_SETTINGS = {"quant_format": "QDQ", "activation_type": "QUInt8", "weight_type": "QInt8",
                     "per_channel": True, "reduce_range": False, "calibrate_method": "MinMax",
                     "pre_process": "quant_pre_process (shape inference + optimisation)"}


@register("precision", "int8-ort-qdq",
          params={"dtype": "int8", "method": "onnxruntime quantize_static", **_ORT_QDQ_SETTINGS},
          available=ort_available, versions=ort_versions)
def int8_ort_qdq(model: torch.nn.Module, ctx: DeployContext) -> Deployed:
    """ONNX Runtime static int8 (QDQ, per-channel weights, MinMax) on the CPU EP; cached."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = ctx.calibration_batches("precision/int8-ort-qdq")
    fp32_path, einfo = onnx_export(model, ctx)
    qname = f"int8-qdq-u8s8-perchannel-minmax-{_calibration_hash(batches)}.onnx"
    qpath = artefact_dir(model, ctx) / qname
    cached = qpath.exists()
    t = time.perf_counter()
    if not cached:
        import onnx

        input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name

        class _Reader(CalibrationDataReader):
            def __init__(self):
                self._it = iter(batches)

            def get_next(self):
                b = next(self._it, None)
                return None if b is None else {input_name: b.numpy()}

        pre = qpath.with_name(qpath.stem + ".pre.onnx")
        with quiet_exporters():
            quant_pre_process(str(fp32_path), str(pre))
            with atomic_path(qpath) as tmp:
                quantize_static(str(pre), str(tmp), _Reader(), quant_format=QuantFormat.QDQ,
                                per_channel=True, reduce_range=False,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.MinMax)
        pre.unlink(missing_ok=True)
    sess = ort_session(qpath, ["CPUExecutionProvider"], expect="CPUExecutionProvider")
    info = base_info("onnxruntime-quantization", ort_versions(), dict(_ORT_QDQ_SETTINGS),
                     **einfo, **ctx.calibration_info(batches), quantized_path=str(qpath),
                     quantize_cached=cached, quantize_s=round(time.perf_counter() - t, 2))
    return ort_deployed(sess, info)


#: read by the tests only: the static int8 noises need calibration data (DeployContext.calibration).
#: Their logits correlate with fp32's less on CPUs without AVX512-VNNI / AMX: the u8 x s8 dot
#: products then go through VPMADDUBSW, whose int16 intermediate saturates (ONNX Runtime's
#: quantization notes); measured 0.91 on an AVX2-only AMD EPYC (top-1 agreement 0.94), above
#: 0.95 on an AVX512-VNNI Xeon.  A different model's logits correlate far less (< 0.7).
for _fn in (int8_pt2e, int8_pt2e_eager, int8_ort_qdq):
    _fn.test_settings = {"calibrated": True, "min_logit_corr": 0.85}
