"""MedContext's model and loss (reference checklist items 10-13): the mask token in token space, image
masking for CNNs, a teacher without gradients, the consistency term and the total loss."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss

from lwi import masking
from lwi.architectures import build
from lwi.errors import LWIError
from lwi.strategies.medcontext import MedContextModel, consistency, make_mask, medcontext_losses

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "unetr": {"hidden_size": 32, "mlp_dim": 64, "num_heads": 2, "feature_size": 4},
    "swinunetr": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]},
    "segresnet": {"init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]},
}


def _model(arch, roi=(32, 32, 32)):
    torch.manual_seed(0)
    return MedContextModel(build(arch, 1, 3, roi, **TINY[arch]))


def _batch(roi=(32, 32, 32)):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 1, *roi, generator=generator)
    targets = torch.randint(0, 3, (2, 1, *roi), generator=generator)
    return images, targets


@pytest.mark.parametrize("arch", ["unetr", "swinunetr"])
def test_masked_tokens_equal_the_mask_token_and_others_are_unchanged(arch):
    # Item 10: tokens after the patch embedding (position embedding included for UNETR).
    model = _model(arch, (32, 32, 64))
    assert model.token_space
    with torch.no_grad():
        model.mask_token.copy_(torch.randn_like(model.mask_token))
    seen = []
    model.student.token_embedding().register_forward_hook(lambda _m, _a, out: seen.append(out.detach()))
    x = torch.randn(2, 1, *model.student.roi_size)
    mask = make_mask(model, 2, 0.6, "tube", "z", torch.device("cpu"), torch.Generator().manual_seed(0))
    assert list(mask.shape[1:]) == model.grid and mask.any() and not mask.all()
    model.eval()
    with torch.no_grad():
        plain_logits = model(x)
        masked_logits = model.masked_forward(x, mask)
        again = model(x)
    plain, masked = seen[0], seen[1]
    if plain.dim() == 5:  # SwinUNETR: [B, C, gx, gy, gz] -> channels last
        plain, masked = plain.permute(0, 2, 3, 4, 1), masked.permute(0, 2, 3, 4, 1)
        where = mask
    else:  # UNETR: [B, L, D]
        where = mask.flatten(1)
    assert torch.equal(masked[where], model.mask_token.expand(int(where.sum()), -1))
    assert torch.equal(masked[~where], plain[~where])
    assert not torch.equal(plain_logits, masked_logits)
    assert torch.equal(again, plain_logits)  # the mask applies to the masked pass only
    # The teacher has no mask hook: its tokens are never replaced.
    with torch.no_grad():
        teacher_logits = model.teacher(x)
    assert torch.allclose(teacher_logits, plain_logits)  # a fresh teacher is the student


def test_cnn_masks_image_patches():
    model = _model("segresnet")
    assert not model.token_space and model.grid == [2, 2, 2]
    inputs = []
    model.student.net.register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
    x = torch.randn(2, 1, 32, 32, 32) + 5.0
    mask = make_mask(model, 2, 0.5, "tube", "x", torch.device("cpu"), torch.Generator().manual_seed(0))
    model.masked_forward(x, mask)
    voxels = masking.mask_to_voxels(mask, 16).unsqueeze(1)
    assert (inputs[0][voxels] == 0).all() and torch.equal(inputs[0][~voxels], x[~voxels])


@pytest.mark.parametrize("arch", ["unetr", "segresnet"])
def test_teacher_gets_no_gradients_and_the_student_and_token_do(arch):
    # Item 11 (no teacher gradients) on a full loss with a backward pass.
    model = _model(arch)
    images, targets = _batch()
    mask = make_mask(model, 2, 0.6, "tube", "z", torch.device("cpu"), torch.Generator().manual_seed(0))
    losses = medcontext_losses(model, images, targets, DiceCELoss(to_onehot_y=True, softmax=True), mask, 0.5)
    losses["total"].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    # Every student parameter a plain forward uses gets a gradient (MONAI's ViT has unused cross-attention norms).
    used = _model(arch)
    used(images).sum().backward()
    expected = {n for n, p in used.student.named_parameters() if p.grad is not None}
    assert {n for n, p in model.student.named_parameters() if p.grad is not None} == expected
    if arch == "unetr":
        assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert not trainable & {id(p) for p in model.teacher.parameters()}


def test_consistency_term_value_and_teacher_gradient():
    # Item 12: beta * mean((zt - zm)^2) / ||zt||_2, constant in the teacher.
    generator = torch.Generator().manual_seed(0)
    zm = torch.randn(2, 3, 4, 4, 4, generator=generator, requires_grad=True)
    zt = torch.randn(2, 3, 4, 4, 4, generator=generator, requires_grad=True)
    value = consistency(zm, zt)
    expected = ((zt - zm) ** 2).mean() / torch.sqrt((zt**2).sum())
    assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    value.backward()
    assert zt.grad is None and zm.grad is not None
    assert float(consistency(zt, zt)) == 0.0


def test_total_loss_and_beta_zero():
    # Item 13: total = DiceCE(S(x)) + DiceCE(S(x~)) + beta * consistency; beta = 0 leaves the two DiceCE terms.
    model = _model("unetr")
    images, targets = _batch()
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    mask = make_mask(model, 2, 0.6, "tube", "z", torch.device("cpu"), torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.mask_token.normal_()  # a mask token unlike the zero start, so S(x~) differs clearly from S(x)
        losses = medcontext_losses(model, images, targets, loss, mask, 0.5, mode="code")
        zs, zm, zt = model(images), model.masked_forward(images, mask), model.teacher(images)
        assert float(losses["supervised"]) == pytest.approx(float(loss(zs, targets)), rel=1e-5)
        assert float(losses["masked"]) == pytest.approx(float(loss(zm, targets)), rel=1e-5)
        assert float(losses["consistency"]) == pytest.approx(float(consistency(zm, zt)), rel=1e-5)
        assert float(losses["consistency"]) > 0
        assert float(losses["total"]) == pytest.approx(
            float(losses["supervised"] + losses["masked"] + 0.5 * losses["consistency"]), rel=1e-6
        )
        zero = medcontext_losses(model, images, targets, loss, mask, 0.0, mode="code")
        assert float(zero["total"]) == pytest.approx(float(loss(zs, targets) + loss(zm, targets)), rel=1e-5)


def test_cube_mask_option_and_unknown_shape():
    model = _model("unetr", (32, 32, 64))
    mask = make_mask(model, 3, 0.5, "cube", "z", torch.device("cpu"), torch.Generator().manual_seed(0))
    assert mask.shape == (3, 2, 2, 4) and (mask.flatten(1).sum(1) == 8).all()  # int(0.5 * 16) per sample
    assert torch.equal(mask[0], mask[2])  # one mask for the batch
    frames = mask[0].movedim(2, 0)
    assert not all(torch.equal(f, frames[0]) for f in frames)  # not tubes (this draw)
    with pytest.raises(LWIError, match="mask shape"):
        make_mask(model, 1, 0.5, "sphere", "z", torch.device("cpu"))



@pytest.mark.parametrize("mode, low, high", [("share", 0.49, 0.51), ("code", 0.0, 1e-3)])
def test_the_consistency_terms_share_of_the_gradient(mode, low, high):
    """M3: with the authors' normalisation (code) the term's gradient is a vanishing share of DiceCE's
    even on a 32^3 crop; the default (share) makes it the stated 0.5 of the masked pass's DiceCE, and
    the total's gradient on the masked logits carries it."""
    model = _model("unetr")
    images, targets = _batch()
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    mask = make_mask(model, 2, 0.6, "tube", "z", torch.device("cpu"), torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.mask_token.normal_()
    captured = []
    hook = model.student.register_forward_hook(lambda _m, _a, out: captured.append(out))
    losses = medcontext_losses(model, images, targets, loss, mask, 0.5, mode=mode, share=0.5)
    hook.remove()
    share = float(losses["consistency_share"])
    assert low <= share <= high
    masked_logits = captured[1]  # the student's second pass is the masked one
    (g_total,) = torch.autograd.grad(losses["total"], masked_logits, retain_graph=True)
    (g_masked,) = torch.autograd.grad(losses["masked"], masked_logits, retain_graph=True)
    extra = torch.linalg.norm(g_total - g_masked) / torch.linalg.norm(g_masked)
    assert float(extra) == pytest.approx(share, rel=1e-3, abs=1e-9)
