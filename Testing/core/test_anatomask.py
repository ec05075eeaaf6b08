"""AnatoMask's pre-training loss and weight transfer (reference checklist items 14-19 at model level):
the teacher chooses masked patches, never gets gradients, and fine-tuning takes exactly the encoder."""

from __future__ import annotations

import pytest
import torch

from lwi import masking
from lwi.architectures import build
from lwi.ema import ema_update
from lwi.errors import LWIError
from lwi.pretraining import transfer_step1_weights
from lwi.strategies.anatomask import AnatoMaskModel, anatomask_losses, masked_count

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "unetr": {"hidden_size": 32, "mlp_dim": 64, "num_heads": 2, "feature_size": 4},
    "swinunetr": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]},
    "segresnet": {"init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]},
    "mednext": {"init_filters": 4, "blocks_down": [1, 1, 1, 1], "blocks_up": [1, 1, 1, 1], "blocks_bottleneck": 1},
}
ROI = (32, 32, 48)  # 2 x 2 x 3 = 12 patches of 16^3; 60% masked -> 12 - round(4.8) = 7


def _inputs_of(module):
    seen = []
    module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    return seen


def _zero_patches(images):
    return (masking.patchify(images, 16) == 0).all(-1)


def test_guided_mask_comes_from_the_teachers_errors_and_the_teacher_gets_no_gradients():
    torch.manual_seed(0)
    model = AnatoMaskModel.build("segresnet", 1, ROI, **TINY["segresnet"])
    teacher_inputs, student_inputs = _inputs_of(model.teacher.net), _inputs_of(model.net.net)
    images = torch.randn(2, 1, *ROI, generator=torch.Generator().manual_seed(0)) + 5.0  # no natural zeros
    count = masked_count([2, 2, 3], 0.6)
    assert count == 7

    # All masked patches chosen by the teacher: its errors are 0 on patches it saw, so the final mask is
    # exactly the random mask it reconstructed.
    losses = anatomask_losses(model, images, patch=16, mask_ratio=0.6, guided=count, generator=torch.Generator())
    assert len(teacher_inputs) == 1 and len(student_inputs) == 1
    first, final = _zero_patches(teacher_inputs[0]), _zero_patches(student_inputs[0])
    assert (first.sum(1) == count).all() and torch.equal(first, final)
    losses["total"].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.net.parameters())

    # Guided share 0 (the start of the ramp): a fresh random mask for the student; the teacher still
    # reconstructs its own random mask so that its loss is reported.
    losses = anatomask_losses(model, images, patch=16, mask_ratio=0.6, guided=0, generator=torch.Generator())
    assert len(teacher_inputs) == 2 and (_zero_patches(student_inputs[1]).sum(1) == count).all()
    assert float(losses["guided"]) == 0 and torch.isfinite(losses["total"]) and torch.isfinite(losses["teacher"])


def test_the_teacher_sees_the_masked_image_and_its_worst_patches_are_masked():
    torch.manual_seed(0)
    model = AnatoMaskModel.build("segresnet", 1, ROI, **TINY["segresnet"])
    with torch.no_grad():  # a teacher different from the student
        for p in model.teacher.parameters():
            p.add_(0.1 * torch.randn_like(p))
    teacher_outputs = []
    model.teacher.register_forward_hook(lambda _m, _a, out: teacher_outputs.append(out.detach()))
    teacher_inputs, student_inputs = _inputs_of(model.teacher.net), _inputs_of(model.net.net)
    images = torch.randn(2, 1, *ROI, generator=torch.Generator().manual_seed(1)) + 5.0
    anatomask_losses(model, images, patch=16, mask_ratio=0.6, guided=3, generator=torch.Generator())
    first = _zero_patches(teacher_inputs[0])
    target = masking.normalised_patches(masking.patchify(images, 16))
    errors = masking.patch_errors(masking.patchify(teacher_outputs[0], 16), target) * first
    worst = torch.topk(errors, 3, dim=1).indices
    final = _zero_patches(student_inputs[0])
    assert final.gather(1, worst).all() and (final.sum(1) == 7).all()


@pytest.mark.parametrize("arch", sorted(TINY))
def test_fine_tuning_takes_exactly_the_encoder(arch):
    # Item 19: the loaded keys are the encoder's, with equal values; decoder and output stay new.
    roi = (32, 32, 32)
    torch.manual_seed(0)
    pre = AnatoMaskModel.build(arch, 1, roi, **TINY[arch])
    with torch.no_grad():
        for p in pre.net.parameters():
            p.add_(1.0)  # pre-trained values unlike any fresh initialisation
        ema_update(pre.teacher, pre.net, 0.5)  # and a teacher unlike the student
    torch.manual_seed(1)
    seg = build(arch, 1, 3, roi, **TINY[arch])
    fresh = {k: v.clone() for k, v in seg.state_dict().items()}
    loaded, new = transfer_step1_weights(pre.state_dict(), seg, only=seg.encoder_prefixes)
    keys = set(seg.state_dict())
    encoder = {k for k in keys if k.startswith(seg.encoder_prefixes)}
    assert encoder and set(loaded) == encoder and set(new) == keys - encoder
    assert not encoder & {k for k in keys if k.startswith(seg.output_prefixes)}
    assert any(not k.startswith(seg.output_prefixes) for k in new)  # a decoder beyond the output layer
    state = seg.state_dict()
    for k in loaded:
        assert torch.equal(state[k], pre.net.state_dict()[k]), k  # the student's, not the teacher's
    for k in new:
        assert torch.equal(state[k], fresh[k]), k

    # The option "all but the output" (as LWI) takes the decoder too.
    torch.manual_seed(1)
    seg = build(arch, 1, 3, roi, **TINY[arch])
    loaded, new = transfer_step1_weights(pre.state_dict(), seg)
    assert set(new) == {k for k in keys if k.startswith(seg.output_prefixes)}


def test_raw_teacher_error_option_scores_raw_patches():
    # The authors' code scores the teacher against the raw patches (option "raw").
    torch.manual_seed(0)
    model = AnatoMaskModel.build("segresnet", 1, ROI, **TINY["segresnet"])
    teacher_outputs = []
    model.teacher.register_forward_hook(lambda _m, _a, out: teacher_outputs.append(out.detach()))
    teacher_inputs, student_inputs = _inputs_of(model.teacher.net), _inputs_of(model.net.net)
    images = torch.randn(2, 1, *ROI, generator=torch.Generator().manual_seed(2)) + 5.0
    images[:, :, :16] *= 10.0  # raw errors differ a lot between patches, normalised ones less
    anatomask_losses(model, images, patch=16, mask_ratio=0.6, guided=3, generator=torch.Generator(), teacher_error="raw")
    first = _zero_patches(teacher_inputs[0])
    errors = masking.patch_errors(masking.patchify(teacher_outputs[0], 16), masking.patchify(images, 16)) * first
    worst = torch.topk(errors, 3, dim=1).indices
    assert _zero_patches(student_inputs[0]).gather(1, worst).all()
    with pytest.raises(LWIError, match="teacher error"):
        anatomask_losses(model, images, patch=16, mask_ratio=0.6, guided=3, teacher_error="other")
