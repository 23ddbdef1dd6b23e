"""An ``.onnx`` model evaluated exactly as deployed: ONNX Runtime, ``CPUExecutionProvider``
(``CUDAExecutionProvider`` after ``.to("cuda")``, for ``--device cuda``).

:class:`OnnxModel` is called like the PyTorch models of the zoo (a normalised ``(N, C, H, W)``
float32 tensor in, ``(N, classes)`` logits out), so the evaluator's batch loop runs it unchanged.
Model-side noises (graph change, precision, backend) need a PyTorch module and do not apply to
it; the planner skips them with that reason.  It pickles as its path (for Dask workers).
"""

from __future__ import annotations

import os
from pathlib import Path


class OnnxModel:
    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        self.path = str(path)
        self.device = device
        self._session = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "device": self.device}

    def __setstate__(self, state: dict) -> None:
        self.path, self.device, self._session = state["path"], state.get("device", "cpu"), None

    def to(self, device) -> OnnxModel:
        """The same file on ``device``: a CUDA device runs ONNX Runtime's ``CUDAExecutionProvider``
        (on that GPU), never silently the CPU one (the session refuses to start instead)."""
        device = str(device)
        return self if device == self.device else OnnxModel(self.path, device)

    @property
    def providers(self) -> list:
        if not self.device.startswith("cuda"):
            return ["CPUExecutionProvider"]
        idx = int(self.device.split(":", 1)[1]) if ":" in self.device else 0
        return [("CUDAExecutionProvider", {"device_id": idx})]

    def __repr__(self) -> str:
        return f"OnnxModel({self.path!r})"

    @property
    def session(self):
        if self._session is None:
            import torch

            from robustbench_sys.zoo.card import CardError

            try:
                import onnxruntime as ort
            except ImportError as e:
                raise CardError(f"--model {self.path}: ONNX Runtime is not installed ({e}); "
                                "pip install 'robustbench-sys[backends]'") from None

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = torch.get_num_threads()   # the evaluator's thread budget
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            try:
                self._session = ort.InferenceSession(self.path, opts, providers=self.providers)
            except Exception as e:
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise CardError(f"--model {self.path}: ONNX Runtime cannot load it ({msg[:200]})") from None
            if self.device.startswith("cuda") and "CUDAExecutionProvider" not in self._session.get_providers():
                self._session = None
                raise CardError(f"--model {self.path}: ONNX Runtime did not start its CUDAExecutionProvider "
                                "(pip install onnxruntime-gpu, or use --device cpu)")
            inputs = self._session.get_inputs()
            if len(inputs) != 1:
                raise CardError(f"--model {self.path}: the graph has {len(inputs)} inputs; give a model with one "
                                "(N, C, H, W) image input")
        return self._session

    def eval(self) -> OnnxModel:
        return self

    def __call__(self, x):
        import numpy as np
        import torch

        sess = self.session
        arr = np.ascontiguousarray(x.detach().cpu().numpy().astype(np.float32, copy=False))
        out = sess.run([sess.get_outputs()[0].name], {sess.get_inputs()[0].name: arr})[0]
        return torch.from_numpy(np.asarray(out))

    def num_classes(self, pp, where: str) -> int:
        """The width of the first output: from the graph when static, else from one blank input."""
        import torch

        from robustbench_sys.zoo.card import CardError

        shape = self.session.get_outputs()[0].shape
        if len(shape) != 2:
            raise CardError(f"{where}: the first output has shape {shape}; expected (batch, classes) logits")
        if isinstance(shape[1], int) and shape[1] > 0:
            return shape[1]
        c = 1 if pp.color == "grey" else 3
        return int(self(torch.zeros(1, c, pp.input_size, pp.input_size)).shape[1])

    @property
    def file(self) -> Path:
        return Path(self.path)
