"""Noise generators for robustbench-sys.  Depends on no other folder of the project.

The stages a noise can replace, their one name each and their call signatures, are the
stage table of :mod:`robustbench_sys.noises.stages`; a noise's family fixes its stage.  Conventions:

- ``decoder`` noises return HxWx3 uint8 RGB; greyscale, CMYK and alpha images are converted to
  RGB the way the library does; unreadable data raises ``OSError`` / ``ValueError``.
- ``resize`` noises take ``size = (width, height)`` and return HxWx3 uint8 or float32 (0..255).
- ``corrupt`` (natural) noises take the cropped uint8 image and ``rng``.
- ``graph`` noises return a changed copy, or raise :class:`NotApplicable` when the model lacks
  the layer they change.
- ``deploy`` (precision / backend) noises return a callable mapping normalised NCHW float32
  batches to logits.
"""

from robustbench_sys.noises.registry import Noise, NotApplicable, families, get, list_noises, register
from robustbench_sys.noises.stages import STAGES, Stage, get_stage

__all__ = ["STAGES", "NotApplicable", "Noise", "Stage", "families", "get", "get_stage", "list_noises", "register"]
