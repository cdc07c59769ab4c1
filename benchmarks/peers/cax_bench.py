"""CAX's NCA (cax.core ConvPerceive + NCAUpdate in a ComplexSystem), measured like worker.py.

Run with benchmarks/.venv-cax/bin/python (Python >= 3.12, see setup_peers.sh).
This is the growing NCA as CAX's own examples build it: depthwise ConvPerceive
with the identity and Sobel (grad) kernels, NCAUpdate with one hidden layer of
128, cell dropout 0.5 as the fire mask, alive masking on the last channel, and the
rollout as CAX's jit-compiled nnx.scan. Training jit-compiles loss, gradient and
the Adam step together. CAX keeps states channels-last with alpha last, so the
seed states of protocol.py are transposed and their channels rotated to match.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import protocol


def main() -> None:
    args = protocol.parse_args()
    # XLA takes 75 % of the GPU's memory up front by default, so batch-256 training (about
    # 69 GiB) failed on an 80 GB H100; the worker has the GPU to itself, as ours do
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
    try:
        import jax
        import jax.numpy as jnp
        import optax
        from cax.core import ComplexSystem
        from cax.core.perceive import ConvPerceive
        from cax.core.perceive.kernels import grad_kernel, identity_kernel
        from cax.core.update import NCAUpdate
        from flax import nnx
    except ImportError as err:
        protocol.fail(f"cannot import cax: {err}")
        return
    if args.device != "cpu":
        jax.config.update(
            "jax_platform_name", "gpu" if args.device.startswith("cuda") else args.device
        )

    c, hidden = protocol.CHANNELS, protocol.HIDDEN

    class GrowingNCA(ComplexSystem):  # type: ignore[misc]
        def __init__(self, *, rngs: nnx.Rngs) -> None:
            self.perceive = ConvPerceive(
                channel_size=c,
                perception_size=3 * c,
                feature_group_count=c,
                use_bias=False,
                rngs=rngs,
            )
            self.update = NCAUpdate(
                channel_size=c,
                perception_size=3 * c,
                hidden_layer_sizes=(hidden,),
                cell_dropout_rate=1.0 - protocol.FIRE_RATE,
                alive_threshold=protocol.ALIVE_THRESHOLD,
                zeros_init=True,
                rngs=rngs,
            )
            kernel = jnp.concatenate([identity_kernel(num_dims=2), grad_kernel(num_dims=2)], -1)
            kernel = jnp.expand_dims(jnp.concatenate([kernel] * c, axis=-1), axis=-2)
            self.perceive.conv.kernel = nnx.Param(kernel)  # (3, 3, 1, 3C)

        def _step(self, state, input=None):  # type: ignore[no-untyped-def]
            return self.update(state, self.perceive(state), input)

    nca = GrowingNCA(rngs=nnx.Rngs(0))
    state = protocol.seed_state(args.state, args.batch, args.size)  # (B, C, H, W)
    order = [i for i in range(c) if i != protocol.ALPHA] + [protocol.ALPHA]
    x0 = jnp.asarray(state[:, order].transpose(0, 2, 3, 1))  # (B, H, W, C), alpha last
    tgt = jnp.asarray(protocol.target(args.batch, args.size).transpose(0, 2, 3, 1))
    params = nnx.All(nnx.Param, nnx.PathContains("update"))
    optimizer = nnx.Optimizer(nca, optax.adam(1e-3), wrt=params)
    steps = args.steps

    @nnx.jit
    def train_step(nca: GrowingNCA, optimizer: nnx.Optimizer, x: jax.Array) -> jax.Array:
        def loss_fn(nca: GrowingNCA) -> jax.Array:
            y = nca(x, num_steps=steps)
            rgba = jnp.concatenate([y[..., :3], y[..., -1:]], -1)
            return jnp.mean((rgba - tgt) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, params))(nca)
        optimizer.update(nca, grads)
        return loss

    @nnx.jit
    def infer_step(nca: GrowingNCA, x: jax.Array) -> jax.Array:
        return nca(x, num_steps=steps)

    out: list[jax.Array] = []

    def train() -> None:
        out[:] = [train_step(nca, optimizer, x0)]

    def infer() -> None:
        out[:] = [infer_step(nca, x0)]

    def sync() -> None:
        for a in out:
            a.block_until_ready()

    def extra() -> dict[str, Any]:
        """The device allocator's peak (bytes in use, not the preallocated pool), as
        torch.cuda.max_memory_allocated is for ours."""
        if args.device == "cpu":
            return {}
        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" not in stats:
            return {}
        return {"gpu_peak_mb": stats["peak_bytes_in_use"] / 2**20}

    protocol.measure(args, train if args.mode == "train" else infer, sync, extra)


if __name__ == "__main__":
    main()
