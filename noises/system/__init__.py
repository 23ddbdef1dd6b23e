"""System noise: one module per SysNoise stage family."""

from noises.system import decode, resize  # noqa: F401
