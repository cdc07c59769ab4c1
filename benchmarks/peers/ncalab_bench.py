"""NCALab's own growing NCA (ncalab.GrowingNCAModel), measured like benchmarks/worker.py.

Run with benchmarks/.venv-ncalab/bin/python (see setup_peers.sh). NCALab's model
keeps RGBA as "image" channels that it updates (growing: immutable_image_channels
is off), 12 hidden channels, Sobel perception (num_learned_filters=0), alive
masking on channel 3, and draws its fire mask from torch's global generator.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import protocol


def main() -> None:
    args = protocol.parse_args()
    try:
        import torch
        import torch.nn.functional as F
        from ncalab import GrowingNCAModel
    except ImportError as err:  # the PyPI wheels of ncalab 0.3-0.5.1 lack ncalab.models
        protocol.fail(f"cannot import ncalab: {err}")
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    # RGBA image channels: an argument in some NCALab versions, fixed to 4 in others
    takes_rgba = "num_image_channels" in inspect.signature(GrowingNCAModel).parameters
    rgba = {"num_image_channels": 4} if takes_rgba else {}
    nca = GrowingNCAModel(
        device,
        **rgba,
        num_hidden_channels=protocol.CHANNELS - 4,
        fire_rate=protocol.FIRE_RATE,
        hidden_size=protocol.HIDDEN,
        use_alive_mask=True,
        num_learned_filters=0,
        filter_padding="zeros",
    ).to(device)
    x0 = torch.from_numpy(protocol.seed_state(args.state, args.batch, args.size)).to(device)
    tgt = torch.from_numpy(protocol.target(args.batch, args.size)).to(device)
    opt = torch.optim.Adam(nca.parameters(), lr=1e-3)

    def train() -> None:
        pred = nca(x0, steps=args.steps)
        loss = F.mse_loss(pred.output_image[:, :4], tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer() -> None:
        with torch.no_grad():
            nca(x0, steps=args.steps)

    cuda = device.type == "cuda"
    if cuda:  # measured like ours (worker.py): the peak of the caching allocator
        torch.cuda.reset_peak_memory_stats(device)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def extra() -> dict[str, float]:
        if not cuda:
            return {}
        return {"gpu_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20}

    protocol.measure(args, train if args.mode == "train" else infer, sync, extra)


if __name__ == "__main__":
    main()
