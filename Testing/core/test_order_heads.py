"""Order-prediction heads (structural consistency), the reconstruction loss and the Step-1 loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lwi.errors import LWIError
from lwi.order_heads import OrderHeads, order_losses, slot_pool
from lwi.pretraining import Step1Model, step1_losses
from lwi.reconstruction import reconstruction_loss
from lwi.transformation import TransformationModule, shuffle

ROI = (32, 32, 64)
SMALL = {
    "unetr": {"hidden_size": 48, "mlp_dim": 96, "num_heads": 3, "feature_size": 8},
    "swinunetr": {"feature_size": 12},
    "mednext": {"init_filters": 8},
    "segresnet": {"init_filters": 8},
}


def test_slot_pool_averages_in_plane_and_within_each_depth_slot():
    g = torch.Generator().manual_seed(0)
    f = torch.rand(2, 3, 4, 5, 12, generator=g)
    pooled = slot_pool(f, 3)
    assert pooled.shape == (2, 3, 3)
    for j in range(3):
        expected = f[..., 4 * j : 4 * (j + 1)].mean(dim=(2, 3, 4))  # [B, C]
        assert torch.allclose(pooled[:, j], expected, atol=1e-6)


def test_slot_pool_rejects_a_depth_not_divisible_by_n():
    with pytest.raises(LWIError, match="depth"):
        slot_pool(torch.zeros(1, 2, 4, 4, 10), 4)


def test_heads_give_one_logit_block_per_level():
    heads = OrderHeads([4, 8, 16], 4)
    levels = [torch.randn(2, 4, 8, 8, 16), torch.randn(2, 8, 4, 4, 8), torch.randn(2, 16, 2, 2, 4)]
    logits = heads(levels)
    assert [tuple(x.shape) for x in logits] == [(2, 4, 4)] * 3
    assert len(list(heads.heads)) == 3
    with pytest.raises(LWIError, match="levels"):
        heads(levels[:2])


def test_order_loss_target_of_slot_j_is_permutation_j():
    perm = torch.tensor([[1, 2, 0, 3], [3, 0, 1, 2]])
    right = torch.nn.functional.one_hot(perm, 4).float() * 50
    wrong = torch.nn.functional.one_hot(torch.argsort(perm, dim=1), 4).float() * 50
    assert order_losses([right], perm)[0].item() < 1e-6
    assert order_losses([wrong], perm)[0].item() > 10
    uniform = order_losses([torch.zeros(2, 4, 4)] * 2, perm)
    assert len(uniform) == 2 and all(abs(x.item() - math.log(4)) < 1e-6 for x in uniform)


class ToyEncoder(nn.Module):
    """Per-voxel features, then depth-aligned downsampling: no information crosses a depth block."""

    def __init__(self, channels=(6, 10)):
        super().__init__()
        self.point = nn.Sequential(nn.Conv3d(1, channels[0], 1), nn.ReLU())
        self.deeper = nn.Sequential(nn.AvgPool3d(2), nn.Conv3d(channels[0], channels[1], 1), nn.Tanh())

    def forward(self, x):
        a = self.point(x)
        return [a, self.deeper(a)]


def test_permuting_depth_blocks_permutes_pooled_slot_features_the_same_way():
    torch.manual_seed(0)
    n = 4
    enc = ToyEncoder()
    heads = OrderHeads([6, 10], n)
    x = torch.rand(3, 1, 8, 8, 32)
    t = TransformationModule(n, mask_ratio=0.0, cube_size=8)(x, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        orig_levels, shuf_levels = enc(x), enc(t.target)
        for orig, shuf in zip(orig_levels, shuf_levels):
            p_orig, p_shuf = slot_pool(orig, n), slot_pool(shuf, n)
            for b in range(3):
                assert torch.allclose(p_shuf[b], p_orig[b, t.permutation[b]], atol=1e-6)
        # Therefore the logits of slot j are those of original block permutation[j].
        for lo, ls in zip(heads(orig_levels), heads(shuf_levels)):
            expected = torch.stack([lo[b, t.permutation[b]] for b in range(3)])
            assert torch.allclose(ls, expected, atol=1e-5)


def test_pooling_another_axis_than_depth_breaks_the_alignment():
    # The authors' code pools along another axis; this guards that slot_pool uses the shuffled one.
    torch.manual_seed(0)
    x = torch.rand(2, 1, 8, 8, 32)
    perm = torch.tensor([[3, 2, 1, 0], [1, 3, 0, 2]])
    f_orig, f_shuf = ToyEncoder()(x)[0], ToyEncoder()(shuffle(x, perm))[0]
    wrong_orig = slot_pool(f_orig.transpose(2, 4), 4)
    wrong_shuf = slot_pool(f_shuf.transpose(2, 4), 4)
    assert not torch.allclose(wrong_shuf[0], wrong_orig[0, perm[0]], atol=1e-4)


def test_reconstruction_loss_is_float32_mse_over_all_voxels():
    out = torch.zeros(2, 2, 4, 4, 4, dtype=torch.bfloat16)
    target = torch.ones(2, 2, 4, 4, 4)
    target[0, 0, 0, 0, 0] = 3.0
    loss = reconstruction_loss(out, target)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx((target**2).mean().item())
    with pytest.raises(LWIError):
        reconstruction_loss(out, target[:, :1])


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_initial_order_loss_is_chance_on_every_level(arch):
    torch.manual_seed(0)
    model = Step1Model.build(arch, 1, ROI, **SMALL[arch])
    n = model.num_subvolumes
    transform = TransformationModule(n, cube_size=16)
    images = torch.rand(2, 1, *ROI)
    with torch.no_grad():
        losses = step1_losses(model, images, transform, generator=torch.Generator().manual_seed(0))
    levels = len(model.net.level_channels)
    assert len(losses["order"]) == levels
    assert sum(x.item() for x in losses["order"]) == pytest.approx(levels * math.log(n), rel=0.15)
    expected_total = losses["reconstruction"] + torch.stack(losses["order"]).sum()
    assert torch.allclose(losses["total"], expected_total)


def test_step1_loss_weights_and_training_signal():
    torch.manual_seed(0)
    model = Step1Model.build("segresnet", 1, (16, 16, 32), init_filters=8, blocks_down=[1, 1, 1], blocks_up=[1, 1])
    transform = TransformationModule(model.num_subvolumes, cube_size=8)
    images = torch.rand(2, 1, 16, 16, 32)
    weighted = step1_losses(model, images, transform, torch.Generator().manual_seed(3), w_rec=2.0, w_order=0.5)
    assert torch.allclose(
        weighted["total"], 2.0 * weighted["reconstruction"] + 0.5 * torch.stack(weighted["order"]).sum()
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(6):
        loss = step1_losses(model, images, transform, torch.Generator().manual_seed(3))["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < first
    # Every order head receives a gradient.
    assert all(h.weight.grad is not None and h.weight.grad.abs().sum() > 0 for h in model.order_heads.heads)


def test_step1_rejects_a_transformation_with_another_n():
    model = Step1Model.build("segresnet", 1, (16, 16, 32), init_filters=8, blocks_down=[1, 1, 1], blocks_up=[1, 1])
    with pytest.raises(LWIError, match="sub-volumes"):
        step1_losses(model, torch.rand(1, 1, 16, 16, 32), TransformationModule(2, cube_size=8))


def test_order_logits_do_not_depend_on_the_scale_of_a_level():
    # UNETR's intermediate levels are raw residual streams whose scale grows under AdamW's first
    # steps; the heads see layer-normalised slot features, so a level's scale cannot blow up its
    # logits (on noise its order loss then stays near ln N: benchmarks/results/order-heads-cpu.json).
    torch.manual_seed(0)
    heads = OrderHeads([8, 16], num_subvolumes=4, normalise=True)
    levels = [torch.randn(2, 8, 3, 3, 8), torch.randn(2, 16, 2, 2, 4)]
    scaled = [levels[0] * 100.0 + 5.0, levels[1]]
    for a, b in zip(heads(levels), heads(scaled)):
        assert torch.allclose(a, b, atol=1e-4)


def test_only_unetr_order_heads_see_normalised_features():
    # UNETR's raw ViT levels need it; on SegResNet it made the Step-1 weights a worse start
    # (lwi demo: fine-tuned validation Dice 0.66 with it, 0.94 without).
    assert Step1Model.build("unetr", 1, (32, 32, 64), hidden_size=96, mlp_dim=192, num_heads=2, feature_size=8).order_heads.normalise
    cnn = Step1Model.build("segresnet", 1, (16, 16, 32), init_filters=8, blocks_down=[1, 1, 1], blocks_up=[1, 1])
    assert not cnn.order_heads.normalise
    levels = [torch.randn(1, c, 4, 4, 8) for c in cnn.order_heads.level_channels]
    scaled = [levels[0] * 10.0, *levels[1:]]
    assert not torch.allclose(cnn.order_heads(levels)[0], cnn.order_heads(scaled)[0])
