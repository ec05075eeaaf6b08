"""Masks of MedContext and AnatoMask (reference checklist items 9, 14, 16 and 17): tube patterns and
counts, AnatoMask's mask count, the guided mask's invariants and schedule, the normalised target."""

from __future__ import annotations

import pytest
import torch

from lwi import masking
from lwi.errors import LWIError
from lwi.strategies.anatomask import masked_count

CPU = torch.device("cpu")


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_tube_mask_repeats_one_pattern_with_exact_count(axis):
    # Item 9: 6^3 token grid (UNETR at 96^3), ratio 0.6 -> 21 of 36 cells per frame, 126/216 overall.
    generator = torch.Generator().manual_seed(0)
    mask = masking.tube_mask(3, (6, 6, 6), 0.6, axis, CPU, generator)
    assert mask.shape == (3, 6, 6, 6) and mask.dtype == torch.bool
    frames = mask.movedim(axis + 1, 1)  # [B, 6 along the tube axis, 6, 6]
    for b in range(3):
        for i in range(6):
            assert torch.equal(frames[b, i], frames[b, 0])  # the same 2-D pattern at every index
        assert int(frames[b, 0].sum()) == 21
    assert float(mask.float().mean()) == pytest.approx(126 / 216)
    assert torch.equal(mask[0], mask[1])  # one mask for the batch, as the authors' code
    # Not a constant pattern: other draws differ (the pattern is random).
    other = masking.tube_mask(1, (6, 6, 6), 0.6, axis, CPU, generator)
    assert not torch.equal(other[0], mask[0])


def test_tube_mask_per_sample_option_and_bad_axis():
    mask = masking.tube_mask(4, (4, 6, 5), 0.5, 1, CPU, torch.Generator().manual_seed(1), per_sample=True)
    assert [int(m[:, 0, :].sum()) for m in mask] == [10] * 4
    assert len({tuple(m.flatten().tolist()) for m in mask}) > 1
    with pytest.raises(LWIError, match="tube axis"):
        masking.tube_mask(1, (6, 6, 6), 0.6, 3, CPU)


def test_anatomask_mask_count_and_shape():
    # Item 14: input (112, 112, 128) -> 7 x 7 x 8 = 392 patches, round(0.4 L) = 157 kept, 235 masked.
    grid = masking.grid_of((112, 112, 128), 16)
    assert grid == [7, 7, 8]
    count = masked_count(grid, 0.6)
    assert count == 235
    mask = masking.random_mask(2, grid, count, CPU, torch.Generator().manual_seed(0))
    assert mask.shape == (2, 7, 7, 8)
    assert (mask.flatten(1).logical_not().sum(1) == 157).all()
    assert not torch.equal(mask[0], mask[1])  # drawn per sample
    with pytest.raises(LWIError, match="not divisible"):
        masking.grid_of((112, 112, 120), 16)


def test_guided_count_schedule():
    # Item 17: len_loss = int(235 * 0.5 * (e + 1) / (E - 1)) for E = 1000.
    assert [masking.guided_count(235, 0.5, e, 1000) for e in (0, 500, 998)] == [0, 58, 117]
    assert masking.guided_count(235, 0.5, 999, 1000) == 117
    assert masking.guided_count(10, 0.5, 0, 1) == 5  # one epoch: no division by zero, at most r_T of M


def test_generate_mask_takes_the_hardest_patches_and_keeps_the_count():
    generator = torch.Generator().manual_seed(0)
    errors = torch.rand(4, 392, generator=generator)
    for guided in (0, 1, 58, 117, 235):
        mask = masking.generate_mask(errors, 235, guided, generator)
        assert (mask.sum(1) == 235).all()  # item 17: always L - len_keep masked
        hardest = torch.topk(errors, guided, dim=1).indices
        assert mask.gather(1, hardest).all()  # the top-len_loss teacher errors are all masked
    # The non-guided rest is random: two draws differ beyond the guided set.
    a = masking.generate_mask(errors, 235, 58, generator)
    b = masking.generate_mask(errors, 235, 58, generator)
    assert not torch.equal(a, b)
    with pytest.raises(LWIError):
        masking.generate_mask(errors, 235, 236, generator)


def test_generate_mask_with_equal_errors_is_uniformly_random():
    generator = torch.Generator().manual_seed(0)
    errors = torch.zeros(2000, 20)
    mask = masking.generate_mask(errors, 10, 5, generator)
    frequency = mask.float().mean(0)  # every patch masked half of the time, not the first ones always
    assert torch.allclose(frequency, torch.full((20,), 0.5), atol=0.05)


def test_patchify_order_matches_the_masks():
    x = torch.zeros(1, 1, 32, 32, 48)
    mask = torch.zeros(1, 2, 2, 3, dtype=torch.bool)
    mask[0, 1, 0, 2] = True
    x = masking.mask_voxels(x + 1.0, mask, 16)
    patches = masking.patchify(x, 16)
    assert patches.shape == (1, 12, 16**3)
    zero = (patches == 0).all(-1)[0]
    assert zero.tolist() == mask.flatten(1)[0].tolist()


def test_normalised_target_statistics():
    # Item 16: per patch mean ~0 and unbiased std ~1, whatever each patch's offset and scale.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 32, 32, 32, generator=generator) * 5 + 3
    x[:, :, :16] *= 40
    target = masking.normalised_patches(masking.patchify(x, 16))
    assert torch.allclose(target.mean(-1), torch.zeros(2, 8), atol=1e-5)
    assert torch.allclose(target.std(-1, unbiased=True), torch.ones(2, 8), atol=1e-4)


def test_masked_patch_loss_ignores_visible_patches():
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(2, 8, 64, generator=generator)
    prediction = torch.randn(2, 8, 64, generator=generator)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, :3] = True
    loss = masking.masked_patch_mse(prediction, target, mask)
    perturbed = prediction.clone()
    perturbed[:, 3:] += 100.0  # change the reconstruction of visible patches only
    assert masking.masked_patch_mse(perturbed, target, mask) == pytest.approx(float(loss))
    changed = prediction.clone()
    changed[:, :3] += 1.0
    assert masking.masked_patch_mse(changed, target, mask) > loss
    expected = ((prediction[:, :3] - target[:, :3]) ** 2).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


def test_replace_tokens_in_both_layouts():
    generator = torch.Generator().manual_seed(0)
    mask = masking.tube_mask(2, (2, 3, 4), 0.5, 2, CPU, generator)
    token = torch.arange(5, dtype=torch.float32)
    sequence = torch.randn(2, 24, 5, generator=generator)
    out = masking.replace_tokens(sequence, mask, token)
    flat = mask.flatten(1)
    assert torch.equal(out[flat], token.expand(int(flat.sum()), 5))
    assert torch.equal(out[~flat], sequence[~flat])
    grid = torch.randn(2, 5, 2, 3, 4, generator=generator)
    out = masking.replace_tokens(grid, mask, token)
    channels_last = out.permute(0, 2, 3, 4, 1)
    assert torch.equal(channels_last[mask], token.expand(int(mask.sum()), 5))
    assert torch.equal(channels_last[~mask], grid.permute(0, 2, 3, 4, 1)[~mask])


def test_guided_share_by_iteration_is_a_smooth_ramp_at_any_length():
    """M1: by epoch, the plan's 3 pre-training epochs gave a 0.25/0.5/0.75 staircase above r_T; by
    iteration the share starts at 0, never exceeds r_T and grows smoothly at 300 and 30,000 iterations."""
    assert [masking.guided_count(130, 0.5, e, 3) for e in range(3)] == [32, 65, 97]  # the paper's rule on 3 epochs
    for total in (300, 30_000):
        counts = [masking.guided_count_at(235, 0.5, i, total) for i in range(total)]
        assert counts[0] == 0 and max(counts) <= int(235 * 0.5)
        assert counts[-1] == int(235 * 0.5 * (total - 1) / total)
        steps = [b - a for a, b in zip(counts, counts[1:])]
        assert min(steps) >= 0 and max(steps) <= 1  # no jumps
