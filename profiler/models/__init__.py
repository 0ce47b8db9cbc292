"""The model zoo: d2l chapter-7 networks by name, plus ``torchvision:NAME`` and ``module.path:callable``.

``resolve(name)`` turns what a user typed into a :class:`ModelSpec`; ``build(spec, size, ...)`` gives a model whose
lazy layers are sized for that input, on the meta device unless asked otherwise (see :mod:`profiler.models.loading`).
"""

from profiler.models.loading import (
    MAX_SIZE,
    ModelSpec,
    build,
    resolve,
    smallest_input_size,
    zoo_names,
)
from profiler.models.zoo import ZOO, ZooEntry

__all__ = ["MAX_SIZE", "ZOO", "ModelSpec", "ZooEntry", "build", "resolve", "smallest_input_size", "zoo_names"]
