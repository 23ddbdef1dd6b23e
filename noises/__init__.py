"""Noise generators for robustbench-sys.  Depends on no other folder of the project.

Stages and their call signatures (a registered noise of a stage has exactly this one):

- ``decode``:  ``fn(data: bytes) -> np.ndarray``  HxWx3 uint8 RGB.  Greyscale, CMYK and
  alpha images are converted to RGB the way the library does.  Raises ``OSError`` /
  ``ValueError`` for unreadable data.
- ``color``:   ``fn(img: np.ndarray) -> np.ndarray``  HxWx3 uint8 RGB -> HxWx3 uint8.
- ``resize``:  ``fn(img: np.ndarray, size: tuple[int, int]) -> np.ndarray`` with
  ``size = (width, height)``; HxWx3 uint8 in, HxWx3 uint8 or float32 (0..255 scale) out.
- ``corrupt``: ``fn(img: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray``
  (natural corruptions on the cropped uint8 image).
- ``attack``:  adversarial attacks on a batch in [0, 1] (see ``noises.adversarial``).
- ``graph``:   ``fn(model: torch.nn.Module) -> torch.nn.Module`` (a changed copy); raises
  :class:`noises.registry.NotApplicable` when the model lacks the layer.
- ``deploy``:  ``fn(model: torch.nn.Module, ctx: DeployContext) -> Callable[[Tensor], Tensor]``
  maps normalised NCHW float32 batches to logits (precision / backend changes).
"""

from noises.registry import NotApplicable, Noise, families, get, list_noises, register

__all__ = ["NotApplicable", "Noise", "families", "get", "list_noises", "register"]
