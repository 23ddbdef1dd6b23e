"""System noise: one module per SysNoise stage family."""

from noises.system import decode, resize  # noqa: F401
from noises.system import color, isolated  # noqa: F401  (colour stage; isolated Pillow builds)
from noises.system import backend, graph, precision  # noqa: F401  (deploy + graph stages)
