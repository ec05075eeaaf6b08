"""Image I/O and the SimpleITK (LPS) <-> MONAI (RAS) geometry bridge (lwi.io)."""

from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lwi.errors import LWIError
from lwi.io import (
    affine_ras,
    image_to_metatensor,
    metatensor_to_image,
    read_image,
    write_image,
)


def oblique_image(size=(5, 6, 7)) -> sitk.Image:
    """An image with anisotropic spacing, a non-zero origin and an oblique, axis-permuted direction."""
    rng = np.random.default_rng(0)
    img = sitk.GetImageFromArray(rng.normal(size=size[::-1]).astype(np.float32))
    img.SetSpacing((0.7, 1.3, 2.1))
    img.SetOrigin((12.0, -30.0, 55.0))
    rotation = np.array(sitk.VersorTransform((0.3, 0.5, 0.8), 0.6).GetMatrix()).reshape(3, 3)
    # Permute the columns too: the image's i axis runs mostly along another patient axis than x.
    img.SetDirection(rotation[:, [2, 0, 1]].ravel().tolist())
    return img


def test_metatensor_affine_maps_voxels_to_the_same_physical_points_as_simpleitk():
    img = oblique_image()
    mt = image_to_metatensor(img)
    assert tuple(mt.shape) == (1, *img.GetSize())
    assert mt.dtype == torch.float32
    affine = mt.affine.numpy()
    for index in [(0, 0, 0), (1, 4, 6), (4, 5, 6), (3, 0, 2)]:
        lps = np.array(img.TransformIndexToPhysicalPoint(index))
        ras = lps * np.array([-1.0, -1.0, 1.0])
        np.testing.assert_allclose(affine @ np.array([*index, 1.0]), [*ras, 1.0], atol=1e-9)
        # ...and the tensor's voxel at that index is the image's voxel there (axis order x, y, z).
        assert mt[0, index[0], index[1], index[2]].item() == pytest.approx(img.GetPixel(*index))


def test_affine_agrees_with_nibabel_reading_the_same_nifti_file(tmp_path):
    img = oblique_image()
    path = tmp_path / "oblique.nii.gz"
    sitk.WriteImage(img, str(path))
    # nibabel is an independent implementation of NIfTI's RAS affine.
    np.testing.assert_allclose(affine_ras(read_image(path)), nib.load(str(path)).affine, atol=1e-4)


def test_metatensor_to_image_restores_the_geometry():
    img = oblique_image()
    back = metatensor_to_image(image_to_metatensor(img))
    assert back.GetSize() == img.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), img.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(back.GetOrigin(), img.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(back.GetDirection(), img.GetDirection(), atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))


def test_write_image_uses_the_reference_grid_exactly(tmp_path):
    ref = oblique_image()
    labels = np.zeros(ref.GetSize(), dtype=np.uint8)
    labels[1, 2, 3] = 7
    out = write_image(labels, ref, tmp_path / "sub" / "seg.nrrd")
    back = sitk.ReadImage(str(out))
    assert back.GetSize() == ref.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), ref.GetSpacing(), rtol=1e-12)
    np.testing.assert_allclose(back.GetOrigin(), ref.GetOrigin(), rtol=1e-12)
    np.testing.assert_allclose(back.GetDirection(), ref.GetDirection(), rtol=1e-12, atol=1e-15)
    assert back.GetPixel(1, 2, 3) == 7
    assert int(sitk.GetArrayFromImage(back).sum()) == 7
    assert sorted(p.name for p in out.parent.iterdir()) == ["seg.nrrd"]  # no temporary left behind


def test_write_image_rejects_a_wrong_shape_and_leaves_no_file(tmp_path):
    ref = oblique_image()
    with pytest.raises(ValueError):
        write_image(np.zeros((2, 2, 2)), ref, tmp_path / "seg.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_read_image_missing_file():
    with pytest.raises(LWIError, match="does not exist"):
        read_image("/nonexistent/volume.nii.gz")


def test_read_image_unreadable_file(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(LWIError, match="could not be read"):
        read_image(bad)


def test_read_image_rejects_2d(tmp_path):
    path = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkInt16), str(path))
    with pytest.raises(LWIError, match="2D"):
        read_image(path)


def test_read_image_rejects_4d_but_accepts_a_singleton_fourth_axis(tmp_path):
    path = tmp_path / "series.nii.gz"
    sitk.WriteImage(sitk.Image([4, 5, 6, 3], sitk.sitkFloat32), str(path))
    with pytest.raises(LWIError, match="4D"):
        read_image(path)
    single = tmp_path / "single.nii.gz"
    sitk.WriteImage(sitk.Image([4, 5, 6, 1], sitk.sitkFloat32), str(single))
    img = read_image(single)
    assert img.GetDimension() == 3 and img.GetSize() == (4, 5, 6)


def test_read_image_rejects_vector_images(tmp_path):
    path = tmp_path / "rgb.nrrd"
    sitk.WriteImage(sitk.Image([4, 5, 6], sitk.sitkVectorFloat32, 3), str(path))
    with pytest.raises(LWIError, match="components"):
        read_image(path)


def test_read_image_from_a_dicom_series_folder(tmp_path):
    rng = np.random.default_rng(1)
    volume = sitk.GetImageFromArray(rng.integers(-1000, 1000, size=(4, 6, 5)).astype(np.int16))
    volume.SetSpacing((0.8, 0.9, 2.5))
    volume.SetOrigin((-10.0, 20.0, 30.0))
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125." + str(int(time.time()))
    for z in range(volume.GetDepth()):
        s = volume[:, :, z]
        s.SetMetaData("0020|000e", uid)  # series instance UID
        s.SetMetaData("0020|000d", uid + ".1")  # study instance UID
        s.SetMetaData("0008|0060", "CT")
        s.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        s.SetMetaData("0020|0032", "\\".join(map(str, volume.TransformIndexToPhysicalPoint((0, 0, z)))))
        s.SetMetaData("0020|0013", str(z))
        s.SetMetaData("0028|0030", "0.9\\0.8")
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(s)
    img = read_image(folder)
    assert img.GetSize() == volume.GetSize()
    np.testing.assert_allclose(img.GetSpacing(), volume.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(img.GetOrigin(), volume.GetOrigin(), atol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(volume))


def test_read_image_folder_without_dicom(tmp_path):
    with pytest.raises(LWIError, match="no DICOM series"):
        read_image(tmp_path)
