"""The automaton itself: shapes, padding, zero init, fire rate, alive mask, frozen inputs."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from ncaflow.config import ModelConfig
from ncaflow.model import nca
from ncaflow.model.nca import NCA


def randomised(cfg: ModelConfig, seed: int = 0) -> NCA:
    torch.manual_seed(seed)
    model = NCA(config=cfg)
    with torch.no_grad():
        model.fc2.weight.normal_(0, 0.1)  # non-zero so steps change the state
    return model


@pytest.mark.parametrize("perception", ["sobel", "sobel_laplace", "learned"])
@pytest.mark.parametrize("padding", ["zeros", "reflect", "replicate", "circular"])
def test_shapes_all_perceptions_and_paddings(perception: str, padding: str) -> None:
    cfg = ModelConfig(
        input_channels=2,
        output_channels=3,
        hidden_channels=5,
        perception=perception,
        padding=padding,
        kernel_size=5 if perception == "learned" else 3,
    )
    model = randomised(cfg)
    x = torch.rand(2, cfg.channels, 9, 11)
    y = model(x, 3, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    k = 1 + cfg.learned_filters if perception == "learned" else 3 + (perception == "sobel_laplace")
    assert model.kernels().shape[0] == cfg.channels * k


@pytest.mark.parametrize("perception", ["sobel", "learned"])
def test_padding_mode_is_honoured(perception: str) -> None:
    x = torch.rand(1, 4, 6, 6)
    outs = {}
    for padding in ["zeros", "reflect", "replicate", "circular"]:
        cfg = ModelConfig(
            output_channels=4, hidden_channels=0, perception=perception, padding=padding
        )
        outs[padding] = randomised(cfg).update(x)
    for a in outs:
        for b in outs:
            if a < b:
                assert not torch.allclose(outs[a][..., 0, :], outs[b][..., 0, :]), (a, b)
                assert torch.allclose(outs[a][..., 2:-2, 2:-2], outs[b][..., 2:-2, 2:-2], atol=1e-6)


def test_circular_padding_wraps() -> None:
    cfg = ModelConfig(output_channels=2, hidden_channels=2, padding="circular", fire_rate=1.0)
    model = randomised(cfg)
    x = torch.rand(1, 4, 8, 8)
    shifted = torch.roll(x, shifts=(3, 5), dims=(2, 3))
    assert torch.allclose(
        torch.roll(model.step(x, None), (3, 5), (2, 3)), model.step(shifted, None), atol=1e-6
    )


def test_zero_init_first_step_leaves_state_unchanged() -> None:
    model = NCA(config=ModelConfig(hidden_channels=8))
    x = torch.rand(2, model.config.channels, 8, 8)
    assert torch.equal(model(x, 1, generator=torch.Generator().manual_seed(0)), x)


def test_fire_rate_statistics() -> None:
    cfg = ModelConfig(output_channels=1, hidden_channels=0, fire_rate=0.3)
    model = NCA(config=cfg)
    masks = torch.stack(list(model.masks(torch.zeros(4, 1, 32, 32), 10, torch.Generator())))
    assert masks.shape == (10, 4, 1, 32, 32)
    assert abs(masks.mean().item() - 0.3) < 0.01
    model = randomised(cfg)
    x = torch.rand(4, 1, 32, 32)
    dx = model.update(x)
    fire = next(model.masks(x, 1, torch.Generator().manual_seed(1)))
    fired = (model.step(x, fire) != x).float()
    assert abs(fired[dx != 0].mean().item() - 0.3) < 0.03
    assert next(model.masks(x, 1)) is not None  # the default generator
    every = NCA(config=dataclasses.replace(cfg, fire_rate=1.0))
    assert list(every.masks(x, 3)) == [None, None, None]  # every cell fires: no mask at all


def test_alive_masking() -> None:
    cfg = ModelConfig(output_channels=4, hidden_channels=4, alive_channel=3, fire_rate=1.0)
    model = randomised(cfg)
    with torch.no_grad():
        model.fc2.weight.abs_()  # always grow alpha
    x = torch.zeros(1, 8, 16, 16)
    x[0, 3:, 8, 8] = 1.0
    y = model(x, 1)
    live = (y.abs().sum(1) > 0)[0]
    assert live[7:10, 7:10].all() and not live[:6].any() and not live[:, :6].any()
    weak = x.clone()
    weak[0, 3, 8, 8] = 0.05  # below the threshold: the cell and its neighbours die
    assert torch.equal(model(weak, 1), torch.zeros_like(x))


def test_frozen_input_channels_never_change() -> None:
    cfg = ModelConfig(input_channels=3, output_channels=2, hidden_channels=3, alive_channel=0)
    model = randomised(cfg)
    x = torch.rand(2, 8, 10, 10)
    y = model(x, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y[:, :3], x[:, :3])
    assert not torch.equal(y[:, 3:], x[:, 3:])


def test_rollout_is_deterministic_for_a_seed() -> None:
    model = randomised(ModelConfig(hidden_channels=4, alive_channel=3))
    x = torch.rand(2, 8, 12, 12)
    a = model(x, 8, generator=torch.Generator().manual_seed(7))
    b = model(x, 8, generator=torch.Generator().manual_seed(7))
    c = model(x, 8, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("block_steps", [1, 3, 7, 100])
def test_masks_drawn_ahead_are_one_draw_a_step(
    block_steps: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU, drawing several steps' masks at once gives each step the mask it would have
    drawn alone, with blocks of any size (7 steps: 3 + 3 + 1 at block 3), and leaves the
    generator where one draw a step leaves it: the weights trained before stay the same.
    Each block is one draw (two kernels on a GPU, where launches bound small batches)."""
    model = randomised(ModelConfig(hidden_channels=4))
    x = torch.rand(2, 8, 5, 6)
    monkeypatch.setattr(nca, "MASK_BLOCK_CELLS", block_steps * 2 * 5 * 6)
    alone, together = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    rate = model.config.fire_rate  # one draw a step, as fire masks were always drawn:
    singly = [(torch.rand(2, 1, 5, 6, generator=alone) < rate).float() for _ in range(7)]
    draws: list[tuple[int, ...]] = []
    rand = torch.rand

    def counted(*size: int, **kw: Any) -> torch.Tensor:
        draws.append(size)
        return rand(*size, **kw)

    monkeypatch.setattr(torch, "rand", counted)
    drawn = [m for m in model.masks(x, 7, together) if m is not None]
    assert len(draws) == -(-7 // block_steps)  # one draw a block: 7, 3, 1, 1
    assert len(singly) == len(drawn) == 7 and all(m.shape == (2, 1, 5, 6) for m in drawn)
    assert all(torch.equal(a, b) for a, b in zip(singly, drawn, strict=True))
    assert torch.equal(alone.get_state(), together.get_state())
    assert 0.3 < torch.stack(drawn).mean().item() < 0.7


def test_fire_masks_given_explicitly() -> None:
    model = randomised(ModelConfig(hidden_channels=4))
    x = torch.rand(2, 8, 6, 6)
    masks = (torch.rand(3, 2, 1, 6, 6) < 0.5).float()
    manual = x
    for m in masks:
        manual = model.step(manual, m)
    assert torch.allclose(model(x, 3, fire_masks=masks), manual)


def test_gradient_checkpointing_gives_same_gradients() -> None:
    model = randomised(ModelConfig(hidden_channels=4, alive_channel=3))
    x = torch.rand(2, 8, 10, 10)
    grads = []
    for chunk in (0, 3):
        model.zero_grad()
        model(
            x, 7, generator=torch.Generator().manual_seed(3), checkpoint_every=chunk
        ).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_step_channel_is_one_more_perception_entry(impl: str) -> None:
    """model.step_channel = T: the MLP sees [perception, t / T] at step t (t = 0 first),
    on every backend; the rollout differs from the same weights without it."""
    from ncaflow.backends.stencil import perceive

    cfg = ModelConfig(
        input_channels=1, output_channels=2, hidden_channels=3, hidden_width=8, step_channel=4
    )
    torch.manual_seed(0)
    model = NCA(config=cfg, impl=impl)
    with torch.no_grad():
        torch.nn.init.normal_(model.fc2.weight, std=0.2)
        model.step_w.mul_(20.0)  # a step entry that matters
    x = torch.rand(2, cfg.channels, 6, 6)
    masks = (torch.rand(5, 2, 1, 6, 6) < 0.5).float()
    with torch.no_grad():
        got = model(x, 5, fire_masks=masks)
        w1 = torch.cat([model.fc1.weight.flatten(1), model.step_w[:, None]], 1)  # (hid, CK + 1)
        ref = x
        for t in range(5):
            p = perceive(ref, model.kernels(), cfg.padding)  # (B, C*K, H, W)
            p = torch.cat([p, torch.full_like(p[:, :1], t / 4)], 1)  # the step entry
            h = torch.relu(torch.einsum("oi,bihw->bohw", w1, p) + model.fc1.bias.view(1, -1, 1, 1))
            dx = torch.einsum("oi,bihw->bohw", model.fc2.weight.flatten(1), h) * masks[t]
            ref = torch.cat([ref[:, :1], ref[:, 1:] + dx], 1)
        plain = NCA(config=dataclasses.replace(cfg, step_channel=0), impl=impl)
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "step_w"})
        without = plain(x, 5, fire_masks=masks)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert (got - without).abs().max() > 1e-2
    assert model.time == 0.0  # reset after the rollout


def test_step_channel_refuses_gradient_checkpointing() -> None:
    from ncaflow.config import ConfigError, RunConfig, from_dict

    raw = {
        "task": "growing",
        "model": {"step_channel": 8},
        "train": {"gradient_checkpointing": True},
    }
    with pytest.raises(ConfigError, match=r"train\.gradient_checkpointing': does not apply"):
        from_dict(RunConfig, raw).validate()
