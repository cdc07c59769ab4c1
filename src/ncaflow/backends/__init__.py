"""How an NCA step runs, besides the plain formulation in :mod:`ncaflow.model.nca`.

- :mod:`~ncaflow.backends.registry`: one backend object per implementation, chosen once
  by name (``NCA(impl=...)``, ``--impl``); the model hands it its weights.
- :mod:`~ncaflow.backends.base`: what a backend is and what it asks of a model.
- :mod:`~ncaflow.backends.fast`: the CPU fast path (channels-last GEMMs, a hand-written
  backward, only the rows that can change computed).
- :mod:`~ncaflow.backends.gemm`: the step written for ``torch.compile`` (``compiled``).
- :mod:`~ncaflow.backends.fused`: the update MLP as Triton kernels (``fused``).
- :mod:`~ncaflow.backends.graphs`: a training iteration replayed as a CUDA graph.

All give the reference step's results up to float rounding (tests/backends/).
"""

from typing import Literal, get_args

# The implementations' names, as --impl offers them (without importing torch); each is a
# backend of registry.BACKENDS, in this order.
Impl = Literal["auto", "fast", "reference", "compiled", "fused"]
IMPLS: tuple[str, ...] = get_args(Impl)
