"""The Step-1 Transformation Module: shuffling of axial sub-volumes and cube masking."""

from __future__ import annotations

import pytest
import torch

from lwi.errors import LWIError
from lwi.transformation import TransformationModule, Transformed, mask_to_voxels, shuffle, unshuffle


def _batch(b=3, c=2, size=(32, 32, 64), seed=0):
    g = torch.Generator().manual_seed(seed)
    # +1 keeps every input voxel non-zero, so masked voxels are recognisable.
    return torch.rand(b, c, *size, generator=g) + 1.0


@pytest.mark.parametrize("per_sample", [True, False])
def test_unshuffle_restores_input_bit_for_bit(per_sample):
    x = _batch()
    out = TransformationModule(4, per_sample=per_sample)(x, generator=torch.Generator().manual_seed(1))
    assert isinstance(out, Transformed)
    assert torch.equal(unshuffle(out.target, out.permutation), x)


def test_every_output_block_is_the_permuted_input_block():
    x = _batch(b=4)
    n = 8
    out = TransformationModule(n, cube_size=16)(x, generator=torch.Generator().manual_seed(2))
    assert out.permutation.dtype == torch.long and out.permutation.shape == (4, n)
    d = x.shape[-1] // n
    for b in range(4):
        assert sorted(out.permutation[b].tolist()) == list(range(n))
        for j in range(n):
            src = int(out.permutation[b, j])
            assert torch.equal(out.target[b, ..., j * d : (j + 1) * d], x[b, ..., src * d : (src + 1) * d])


def test_shuffle_follows_the_documented_convention():
    x = torch.arange(6, dtype=torch.float32).view(1, 1, 1, 1, 6)
    perm = torch.tensor([[2, 0, 1]])
    assert shuffle(x, perm).flatten().tolist() == [4, 5, 0, 1, 2, 3]


@pytest.mark.parametrize("ratio,cube", [(0.4, 16), (0.4, 8), (0.75, 8), (0.0, 16), (0.3, 8)])
def test_masked_fraction_is_exact(ratio, cube):
    x = _batch()
    t = TransformationModule(4, mask_ratio=ratio, cube_size=cube)
    out = t(x, generator=torch.Generator().manual_seed(3))
    grid = tuple(s // cube for s in x.shape[2:])
    assert out.mask.dtype == torch.bool and out.mask.shape == (x.shape[0], *grid)
    total = grid[0] * grid[1] * grid[2]
    counts = out.mask.flatten(1).sum(1).tolist()
    assert counts == [int(total * ratio)] * x.shape[0]


def test_masked_voxels_are_zero_and_others_equal_the_shuffled_input():
    x = _batch()
    out = TransformationModule(4, mask_ratio=0.4, cube_size=8)(x, generator=torch.Generator().manual_seed(4))
    voxels = mask_to_voxels(out.mask, 8).unsqueeze(1).expand_as(x)
    assert voxels.any() and not voxels.all()
    assert torch.all(out.masked[voxels] == 0)
    assert torch.equal(out.masked[~voxels], out.target[~voxels])
    # The input is strictly positive, so zeros in the output appear exactly where the mask says.
    assert torch.equal(out.masked == 0, voxels)


def test_masking_mutates_neither_target_nor_input():
    x = _batch()
    x_before = x.clone()
    t = TransformationModule(4, mask_ratio=0.6, cube_size=8, mask_value=0.0)
    out = t(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(x, x_before)
    assert torch.equal(out.target, shuffle(x_before, out.permutation))
    assert out.target.data_ptr() != out.masked.data_ptr()
    assert out.target.data_ptr() != x.data_ptr()


def test_mask_value_is_configurable():
    x = _batch()
    out = TransformationModule(4, cube_size=16, mask_value=-3.0)(x, generator=torch.Generator().manual_seed(6))
    voxels = mask_to_voxels(out.mask, 16).unsqueeze(1).expand_as(x)
    assert torch.all(out.masked[voxels] == -3.0)


def test_per_sample_and_shared_per_batch():
    x = _batch(b=6, c=1, size=(16, 16, 64))
    per = TransformationModule(8, cube_size=8)(x, generator=torch.Generator().manual_seed(7))
    assert len({tuple(p.tolist()) for p in per.permutation}) > 1
    assert len({tuple(m.flatten().tolist()) for m in per.mask}) > 1
    shared = TransformationModule(8, cube_size=8, per_sample=False)(x, generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(p, shared.permutation[0]) for p in shared.permutation)
    assert all(torch.equal(m, shared.mask[0]) for m in shared.mask)


def test_generator_makes_it_reproducible():
    x = _batch()
    t = TransformationModule(4, cube_size=8)
    a = t(x, generator=torch.Generator().manual_seed(11))
    b = t(x, generator=torch.Generator().manual_seed(11))
    c = t(x, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a.masked, b.masked) and torch.equal(a.permutation, b.permutation)
    assert not (torch.equal(a.permutation, c.permutation) and torch.equal(a.mask, c.mask))


def test_sizes_that_do_not_divide_are_clear_errors():
    with pytest.raises(LWIError, match="sub-volumes"):
        TransformationModule(3, cube_size=16)(_batch(size=(32, 32, 64)))
    with pytest.raises(LWIError, match="cube size"):
        TransformationModule(4, cube_size=16)(_batch(size=(24, 32, 64)))
    with pytest.raises(LWIError, match="B, C, X, Y, Z"):
        TransformationModule(4)(torch.zeros(1, 32, 32, 64))
    with pytest.raises(LWIError):
        TransformationModule(4, mask_ratio=1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_with_a_cpu_generator():
    x = _batch().cuda()
    out = TransformationModule(4, cube_size=8)(x, generator=torch.Generator().manual_seed(0))
    assert out.masked.is_cuda and out.permutation.is_cuda and out.mask.is_cuda
    assert torch.equal(unshuffle(out.target, out.permutation), x)
    cpu = TransformationModule(4, cube_size=8)(x.cpu(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.permutation.cpu(), cpu.permutation) and torch.equal(out.mask.cpu(), cpu.mask)
