"""Measure one case of the PyTorch implementations (run by run.py in a fresh process).

--impl baseline   the eager Distill/NCALab formulation in baseline.py
--impl reference  ncaflow's NCA(impl="reference") (the plain formulation it keeps)
--impl ncaflow    ncaflow's NCA (impl="auto": the fast path on CPU and large GPU grids)
--impl graph      CUDA only: NCA(impl="reference") with every iteration replayed as one
                  CUDA graph (ncaflow.backends.graphs.GraphedIteration, as train.cuda_graphs does)
--impl graph-fast CUDA only: the same with the fast path (NCA(impl="fast"))
--impl graph-compiled       CUDA only: the same with NCA(impl="compiled") (torch.compile)
--impl graph-compiled-tf32  and TF32 matmuls (cuDNN's 1x1 convolutions in the others
                            use TF32 already: PyTorch's default)
--impl graph-fused          CUDA only: NCA(impl="fused") (the MLP as Triton kernels, TF32)
--impl graph-fused-ckpt     and the rollout checkpointed every 8 steps, as
                            train.gradient_checkpointing does (state kept per chunk only)

All start from the same weights, so they compute the same function.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import protocol
from baseline import DistillNCA

from ncaflow.backends.graphs import GraphedIteration, graphs_supported
from ncaflow.config import ModelConfig
from ncaflow.model.nca import NCA
from ncaflow.training.train import ROLLOUT_CHUNK


def build(impl: str, device: torch.device) -> torch.nn.Module:
    cfg = ModelConfig(
        output_channels=4,
        hidden_channels=protocol.CHANNELS - 4,
        hidden_width=protocol.HIDDEN,
        fire_rate=protocol.FIRE_RATE,
        alive_channel=protocol.ALPHA,
        alive_threshold=protocol.ALIVE_THRESHOLD,
    )
    torch.manual_seed(0)
    impls = {  # worker --impl -> NCA(impl=...); "ncaflow" is what users get
        "ncaflow": "auto",
        "reference": "reference",
        "graph": "reference",
        "graph-fast": "fast",
        "graph-compiled": "compiled",
        "graph-fused": "fused",
    }
    name = impl.removesuffix("-tf32").removesuffix("-ckpt")
    nca = NCA(config=cfg, impl=impls.get(name, "fast"))  # type: ignore[arg-type]
    with torch.no_grad():  # small non-zero updates, so that the state evolves
        nca.fc2.weight.normal_(0.0, 0.01)
    if impl != "baseline":
        return nca.to(device)
    base = DistillNCA(protocol.CHANNELS, protocol.HIDDEN, protocol.FIRE_RATE, protocol.ALPHA)
    base.load_state_dict(nca.state_dict(), strict=False)  # fc1/fc2: same names and shapes
    return base.to(device)


def train_iteration(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    tgt: torch.Tensor,
    gen: torch.Generator,
    **rollout_kw: int,
) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """One benchmark training iteration, ``fn(steps, x)``: rollout, MSE of the RGBA channels
    against tgt, backward, optimiser step; returns the loss."""

    def step(steps: int, x: torch.Tensor) -> torch.Tensor:
        y = model(x, steps, generator=gen, **rollout_kw)
        loss = F.mse_loss(y[:, :4], tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def main() -> None:
    args = protocol.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build(args.impl, device)
    x0 = torch.from_numpy(protocol.seed_state(args.state, args.batch, args.size)).to(device)
    tgt = torch.from_numpy(protocol.target(args.batch, args.size)).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    graphs = args.impl.startswith("graph")
    if args.impl.endswith("-tf32"):
        torch.backends.cuda.matmul.allow_tf32 = True
    if graphs and not graphs_supported(device):
        protocol.fail("CUDA graphs need a CUDA device")
        return
    lr = torch.tensor(1e-3, device=device) if graphs else 1e-3
    # the trainer's gradient_checkpointing (the baseline has no such argument)
    rollout_kw = {"checkpoint_every": ROLLOUT_CHUNK} if args.impl.endswith("-ckpt") else {}
    opt = torch.optim.Adam(model.parameters(), lr=lr, capturable=graphs)

    train_step = train_iteration(model, opt, tgt, gen, **rollout_kw)

    def infer_step(steps: int, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = model(x, steps, generator=gen)
            return out

    step = train_step if args.mode == "train" else infer_step
    params = list(model.parameters())
    run = GraphedIteration(
        step,
        params=params,
        optimizer=opt if args.mode == "train" else None,
        generator=gen,
        enabled=graphs,
    )

    def iteration() -> None:
        run(args.steps, x0)

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def extra() -> dict[str, float]:
        if not cuda:
            return {}
        return {"gpu_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20}

    protocol.measure(args, iteration, sync, extra)


if __name__ == "__main__":
    main()
