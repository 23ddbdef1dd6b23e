"""System noise: one module per SysNoise stage family."""

from robustbench_sys.noises.system import backend, color, decode, graph, isolated, precision, resize  # noqa: F401  # noqa: F401  (colour stage; isolated Pillow builds)  # noqa: F401  (deploy + graph stages)
