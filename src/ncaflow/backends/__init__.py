"""How an NCA step runs, besides the plain formulation in :mod:`ncaflow.nca`.

- :mod:`~ncaflow.backends.fast`: the CPU fast path (channels-last GEMMs, a hand-written
  backward, only the rows that can change computed).
- :mod:`~ncaflow.backends.gemm`: the step written for ``torch.compile`` (``impl="compiled"``).
- :mod:`~ncaflow.backends.fused`: the update MLP as Triton kernels (``impl="fused"``).
- :mod:`~ncaflow.backends.graphs`: a training iteration replayed as a CUDA graph.
- :mod:`~ncaflow.backends.runner`: which of these a model's step and rollout take, and the
  weights in the layout each wants.

All give the reference step's results up to float rounding (tests/test_nca_fast.py,
tests/test_fused.py, tests/test_graphs.py).
"""
