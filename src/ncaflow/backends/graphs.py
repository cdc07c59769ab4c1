"""Whole training iterations as CUDA graphs.

An NCA training iteration is tens of steps of small kernels, so on a GPU at small
batch sizes it is bound by kernel launches, not arithmetic (on one H100 the eager
growing config runs at ~18 iterations/s at batch 8 with the GPU mostly idle).
:class:`GraphedIteration` captures the complete iteration -- rollout, loss,
backward, gradient transforms and optimiser step -- once per rollout length and
input shape, then replays it as a single launch.

What the captured function may do is what CUDA graphs allow: no host
synchronisation (``.item()``, data-dependent shapes), randomness only from the
registered generator, and an optimiser that runs on device tensors
(``Adam``/``AdamW`` with ``capturable=True`` and a tensor learning rate, see
:func:`ncaflow.training.train.build_optimizer`).

Graphs share one memory pool: they never run concurrently, and everything a
graph reads that it did not write in the same replay (parameters, optimiser
state, the static inputs, the generator's offset) lives outside the pool.

On a CPU, or with ``enabled=False``, the function simply runs eagerly, so the
same training code serves both.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["GraphedIteration", "graphs_supported"]


def graphs_supported(device: torch.device | str) -> bool:
    """Whether CUDA graphs with a registered custom generator work on this device."""
    return torch.device(device).type == "cuda" and hasattr(
        torch.cuda.CUDAGraph, "register_generator_state"
    )


class GraphedIteration:
    """Run ``fn(key, *tensors)`` as replays of CUDA graphs, one per key and input shapes.

    fn: the iteration; ``key`` is a hashable argument that changes its control
        flow (the rollout length); ``tensors`` are its inputs (None allowed) and
        are copied into static buffers before every replay.
    params, optimizer: whose values the warm-up before the first capture changes
        and this class restores, so that capturing leaves training unchanged
        (optimizer None: fn steps no optimiser, e.g. an inference rollout).
    generator: the CUDA generator fn draws its randomness from.

    The returned tensors are the graph's static outputs: valid until the next call.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        params: Sequence[Tensor],
        optimizer: torch.optim.Optimizer | None,
        generator: torch.Generator,
        enabled: bool = True,
    ) -> None:
        self.fn = fn
        self.params = params
        self.optimizer = optimizer
        self.generator = generator
        self.enabled = enabled and graphs_supported(generator.device)
        self._graphs: dict[Hashable, tuple[torch.cuda.CUDAGraph, list[Tensor | None], Any]] = {}
        self._pool: Any = None  # made by the first capture, after the warm-up

    def __len__(self) -> int:
        """Number of graphs captured so far."""
        return len(self._graphs)

    def __call__(self, key: Hashable, *tensors: Tensor | None) -> Any:
        if not self.enabled:
            return self.fn(key, *tensors)
        full_key = (key, *(None if t is None else (tuple(t.shape), t.dtype) for t in tensors))
        entry = self._graphs.get(full_key)
        if entry is None:
            entry = self._capture(key, tensors)
            self._graphs[full_key] = entry
        graph, static, outputs = entry
        for dst, src in zip(static, tensors, strict=True):
            if dst is not None and src is not None:
                dst.copy_(src)
        graph.replay()
        return outputs

    def _capture(
        self, key: Hashable, tensors: tuple[Tensor | None, ...]
    ) -> tuple[torch.cuda.CUDAGraph, list[Tensor | None], Any]:
        static = [None if t is None else t.clone() for t in tensors]
        if self._pool is None:
            self._warm_up(key, static)
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self.generator)
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph, pool=self._pool):
            outputs = self.fn(key, *static)
        return graph, static, outputs

    def _optimizer_state(self) -> list[Tensor]:
        if self.optimizer is None:
            return []
        return [v for s in self.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]

    def _warm_up(self, key: Hashable, static: list[Tensor | None]) -> None:
        """Run fn twice on a side stream (library handles, lazily created optimiser
        state), then put parameters, optimiser state and generator back as they were."""
        params = [p.detach().clone() for p in self.params]
        state = {id(v): v.detach().clone() for v in self._optimizer_state()}
        rng = self.generator.get_state()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.fn(key, *static)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for p, saved in zip(self.params, params, strict=True):
                p.copy_(saved)
            for v in self._optimizer_state():
                # state that existed goes back; state the warm-up created starts at zero,
                # which is what Adam's and AdamW's first step assume
                if id(v) in state:
                    v.copy_(state[id(v)])
                else:
                    v.zero_()
        self.generator.set_state(rng)
