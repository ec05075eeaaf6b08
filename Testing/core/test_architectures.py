"""Architecture adapters: build, encoder levels, spec round trip, output-layer swap and Step-1 transfer."""

from __future__ import annotations

import json

import pytest
import torch

from lwi.architectures import ARCHITECTURES, build
from lwi.errors import LWIError
from lwi.pretraining import Step1Model, transfer_step1_weights

ROI = (32, 32, 64)
SMALL = {
    "unetr": {"hidden_size": 48, "mlp_dim": 96, "num_heads": 3, "feature_size": 8},
    "swinunetr": {"feature_size": 12},
    "mednext": {"init_filters": 8},
    "segresnet": {"init_filters": 8},
}
# Bottleneck downsampling along depth, from each network's design (16^3 ViT patches, 5 Swin stages, ...).
DEPTH_FACTOR = {"unetr": 16, "swinunetr": 32, "mednext": 16, "segresnet": 8}


def test_registry_lists_the_four_networks():
    assert set(ARCHITECTURES) == {"unetr", "swinunetr", "mednext", "segresnet"}


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_adapter_output_and_levels(arch):
    torch.manual_seed(0)
    net = build(arch, 2, 3, ROI, **SMALL[arch])
    x = torch.rand(2, 2, *ROI)
    out, levels = net.forward_with_levels(x)
    assert out.shape == (2, 3, *ROI)
    assert torch.allclose(net(x), out, atol=1e-5)  # the plain forward is the same network
    assert net.num_subvolumes == ROI[2] // DEPTH_FACTOR[arch]
    assert len(levels) == len(net.level_channels) >= 4
    for level, channels in zip(levels, net.level_channels):
        assert level.dim() == 5 and level.shape[:2] == (2, channels)
        assert level.shape[4] % net.num_subvolumes == 0
        # In-plane and depth are downsampled alike, so slot j covers the same input depth range on each level.
        assert level.shape[2] * ROI[2] == level.shape[4] * ROI[0]
    # The deepest level is the bottleneck grid: its depth is N.
    assert levels[-1].shape[4] == net.num_subvolumes
    assert out.requires_grad and all(level.requires_grad for level in levels)


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_spec_rebuilds_the_same_network(arch):
    net = build(arch, 1, 4, ROI, **SMALL[arch])
    spec = json.loads(json.dumps(net.spec()))
    assert spec["arch"] == arch and spec["roi_size"] == list(ROI) and spec["out_channels"] == 4
    again = build(**spec)
    assert again.spec() == spec
    again.load_state_dict(net.state_dict())  # same keys and shapes, strict
    x = torch.rand(1, 1, *ROI)
    net.eval()
    again.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), again(x), atol=1e-5)


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_step1_weights_transfer_to_a_segmentation_network(arch):
    torch.manual_seed(0)
    step1 = Step1Model.build(arch, 1, ROI, **SMALL[arch])
    state = {k: v.clone() for k, v in step1.state_dict().items()}
    assert all(k.startswith(("net.", "order_heads.")) for k in state)
    seg = build(arch, 1, 5, ROI, **SMALL[arch])
    fresh = {k: v.clone() for k, v in seg.state_dict().items()}

    loaded, new = transfer_step1_weights(state, seg)

    after = seg.state_dict()
    assert set(loaded) | set(new) == set(after) and not set(loaded) & set(new)
    assert new and all(k.startswith(tuple(seg.output_prefixes)) for k in new)
    assert not any("order_heads" in k for k in after)
    for k in loaded:  # every non-output tensor now holds the Step-1 value
        assert torch.equal(after[k], state["net." + k]), k
    for k in new:  # the output layer keeps its fresh initialisation (and its 5-class shape)
        assert torch.equal(after[k], fresh[k]), k
    changed = [k for k in loaded if after[k].is_floating_point() and not torch.equal(fresh[k], after[k])]
    assert changed  # the transfer really replaced weights
    out = seg(torch.rand(1, 1, *ROI))
    assert out.shape == (1, 5, *ROI)


def test_transfer_from_another_architecture_is_a_clear_error():
    step1 = Step1Model.build("segresnet", 1, ROI, **SMALL["segresnet"])
    seg = build("mednext", 1, 3, ROI, **SMALL["mednext"])
    with pytest.raises(LWIError, match="another architecture or input size"):
        transfer_step1_weights(step1.state_dict(), seg)


def test_transfer_from_another_roi_or_width_is_a_clear_error():
    step1 = Step1Model.build("unetr", 1, ROI, **SMALL["unetr"])
    other_roi = build("unetr", 1, 3, (32, 32, 32), **SMALL["unetr"])  # position embeddings differ
    with pytest.raises(LWIError, match="another architecture or input size"):
        transfer_step1_weights(step1.state_dict(), other_roi)
    step1 = Step1Model.build("segresnet", 1, ROI, init_filters=8)
    wider = build("segresnet", 1, 3, ROI, init_filters=16)
    with pytest.raises(LWIError, match="another architecture or input size"):
        transfer_step1_weights(step1.state_dict(), wider)


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(LWIError) as err:
        build("vnet", 1, 2, ROI)
    for name in ARCHITECTURES:
        assert name in str(err.value)


@pytest.mark.parametrize("arch,roi", [("unetr", (32, 32, 40)), ("swinunetr", (32, 32, 48)), ("segresnet", (32, 32, 20))])
def test_roi_the_network_cannot_take_is_a_clear_error(arch, roi):
    with pytest.raises(LWIError, match="multiple of"):
        build(arch, 1, 2, roi, **SMALL[arch])


def test_bad_parameters_are_clear_errors():
    with pytest.raises(LWIError, match="Unknown unetr parameter"):
        build("unetr", 1, 2, ROI, hidden=48)
    with pytest.raises(LWIError, match="Cannot build unetr"):
        build("unetr", 1, 2, ROI, hidden_size=50, num_heads=3)  # not divisible by the heads
    with pytest.raises(LWIError, match="input channels|output channels"):
        Step1Model(build("segresnet", 1, 2, ROI, init_filters=8))


@pytest.mark.parametrize("arch,n,channels", [("unetr", 6, [768] * 4), ("mednext", 6, None), ("segresnet", 12, None)])
def test_default_parameters_work_at_96_cubed(arch, n, channels):
    # Meta tensors check every shape of the full-size default networks without allocating memory.
    with torch.device("meta"):
        net = build(arch, 1, 14, (96, 96, 96))
        out, levels = net.forward_with_levels(torch.empty(1, 1, 96, 96, 96))
    assert out.shape == (1, 14, 96, 96, 96)
    assert net.num_subvolumes == n and levels[-1].shape[4] == n
    assert [lv.shape[1] for lv in levels] == net.level_channels
    if channels is not None:
        assert net.level_channels == channels


def test_swinunetr_defaults_at_96_cubed():
    # MONAI's SwinUNETR cannot be built on the meta device; check its grid without running it.
    net = build("swinunetr", 1, 14, (96, 96, 96))
    assert net.num_subvolumes == 3
    assert net.level_channels == [48, 96, 192, 384, 768]


@pytest.mark.parametrize("arch", ["unetr", "segresnet"])
def test_a_deep_copy_reports_its_own_levels(arch):
    # EMA teachers are deep copies: their hooks must capture the copy's features, not the original's.
    import copy

    torch.manual_seed(0)
    net = build(arch, 1, 2, ROI, **SMALL[arch])
    twin = copy.deepcopy(net)
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(0.5)
        x = torch.rand(1, 1, *ROI)
        _, own = twin.forward_with_levels(x)
        _, original = net.forward_with_levels(x)
    assert len(own) == len(twin.level_channels)
    assert not torch.allclose(own[0], original[0])


def test_unetr_embeds_patches_with_a_linear_layer_as_the_paper():
    # The paper, the authors' code and MONAI's UNETR tutorial use proj_type="perceptron": a Linear
    # projection of each flattened 16^3 patch (trunc-normal initialised), not a strided convolution.
    net = build("unetr", 1, 3, ROI, **SMALL["unetr"])
    assert net.params["proj_type"] == "perceptron"
    embedding = net.net.vit.patch_embedding.patch_embeddings
    assert any(isinstance(m, torch.nn.Linear) for m in embedding.modules())
    assert not any(isinstance(m, torch.nn.Conv3d) for m in embedding.modules())
