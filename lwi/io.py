"""Image I/O and the geometry bridge between SimpleITK (LPS) and MONAI (RAS).

Every volume enters the core through :func:`read_image` and :func:`image_to_metatensor`, and every
result leaves through :func:`array_to_image` / :func:`write_image` on the exact grid of a reference
image, so training, inference and previews share one notion of geometry.

Conventions: SimpleITK arrays are indexed ``[z, y, x]``; MONAI tensors here are ``[C, X, Y, Z]``
(the reversed numpy axes, channel first). ITK's physical space is LPS; MONAI's affines are RAS:
``affine_ras = diag(-1, -1, 1, 1) @ affine_lps`` with ``affine_lps = [[D @ diag(spacing), origin], [0, 1]]``.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
import SimpleITK as sitk

from lwi.errors import LWIError
from lwi.outputs import write_failure_reason, write_file

if TYPE_CHECKING:  # torch/MONAI are imported lazily so that reading files stays cheap
    import torch
    from monai.data import MetaTensor

PathLike = Union[str, "os.PathLike[str]"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_image(path: PathLike) -> sitk.Image:
    """Read a 3D scalar image from a file, or from a folder holding a DICOM series.

    A folder with several DICOM series yields the series with the most files. A 4D file whose
    fourth axis has size 1 is read as 3D.

    Raises:
        LWIError: the path is missing, cannot be read as an image, or is not a 3D scalar volume.
    """
    p = Path(path)
    if not p.exists():
        raise LWIError(f"The image {p} does not exist.")
    try:
        if p.is_dir():
            image = _read_dicom_folder(p)
        else:
            check_complete(p)
            image = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        raise LWIError(f"The file {p} could not be read as an image ({_first_line(exc)}).") from None
    image = _as_3d(image, p)
    check_finite(image, p)
    return image


def check_image_file(path: PathLike) -> None:
    """The voxel checks of :func:`read_image` without keeping the image (dataset checks): complete
    file, and finite voxels for floating-point images (integer voxels are always finite)."""
    p = Path(path)
    check_complete(p)
    if p.name.lower().endswith((".nii", ".nii.gz")):
        return  # check_complete read the stored values
    if p.is_dir() or "float" in sitk.GetPixelIDValueAsString(read_image_information(p).GetPixelID()):
        read_image(p)


def check_finite(image: sitk.Image, path: PathLike) -> None:
    """Refuse an image with NaN or infinite voxels, naming the file and how many there are.

    No repair rule is applied: a NaN has no honest value, and replacing it by 0 changed 41% of a
    label map in a test (the network sees an edge that is not there).
    """
    if image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64, sitk.sitkVectorFloat32, sitk.sitkVectorFloat64):
        return  # integer voxels are always finite
    _refuse_non_finite(sitk.GetArrayViewFromImage(image), path)


def _refuse_non_finite(array: np.ndarray, path: PathLike) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        raise LWIError(
            f"The image {path} has {bad} voxel(s) that are not numbers (NaN or infinite); "
            "fix or mask them in the source data (LWI does not guess values)."
        )


def check_complete(path: PathLike) -> None:
    """Refuse a truncated or corrupt file, or NIfTI voxels that are not numbers, before ITK reads it.

    ITK's NIfTI reader fills the missing part of a truncated file with zeros and reads NaN as 0, so
    NIfTI files are checked with nibabel (which reads the stored values, and fails on a short file);
    any other ``.gz`` file is decompressed to its end (its CRC is checked). Other formats' readers
    detect truncation themselves and keep NaN, which :func:`check_finite` finds.
    """
    import gzip
    import zlib

    p = Path(path)
    name = p.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel
            from nibabel.filebasedimages import ImageFileError

            try:
                stored = np.asanyarray(nibabel.load(str(p)).dataobj)
            except ImageFileError:
                return  # not a NIfTI file at all: ITK's reader says what it is not
            if stored.dtype.kind in "fc":
                _refuse_non_finite(stored, p)
        elif name.endswith(".gz"):
            with gzip.open(p, "rb") as f:
                while f.read(1 << 22):
                    pass
    except LWIError:
        raise
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LWIError(f"The file {p} is truncated or corrupt ({reason.rstrip('.')}); copy it again from its source.") from None


def read_image_information(path: PathLike) -> sitk.ImageFileReader:
    """Read only the header of an image file (size, spacing, origin, direction, pixel type).

    Raises:
        LWIError: the file is missing or is not an image SimpleITK can read.
    """
    p = Path(path)
    if not p.is_file():
        raise LWIError(f"The image {p} does not exist.")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise LWIError(f"The file {p} could not be read as an image ({_first_line(exc)}).") from None
    return reader


def estimate_voxels(path: PathLike) -> int:
    """The number of voxels of an image file (header only) or DICOM folder (from its size), for
    estimating the size of outputs before any work; 0 for a file that cannot be read."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.iterdir() if f.is_file()) // 2  # mostly 16-bit pixels
    try:
        size = read_image_information(p).GetSize()
    except LWIError:
        return 0  # unreadable: reading the image itself reports it (a folder's other images go on)
    count = 1
    for n in size:
        count *= int(n)
    return count


def _first_line(exc: Exception) -> str:
    lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
    # ITK messages start with a file/line location; the last line holds the reason.
    return lines[-1].replace("sitk::ERROR: ", "").rstrip(".") if lines else type(exc).__name__


def dicom_series_ids(folder: PathLike) -> tuple:
    """The DICOM series UIDs in ``folder`` (empty when it holds none).

    ITK's own warning for a folder without DICOM ("No Series were found") is switched off during the
    scan: an empty answer is a normal outcome here, and the caller words any error for the user.
    """
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _read_dicom_folder(folder: Path) -> sitk.Image:
    """The one DICOM series of ``folder``; refused when the folder mixes several series, or when the
    slices are not evenly spaced (missing slices, or a non-uniform acquisition), which ITK would
    otherwise stack into a volume with the wrong geometry."""
    series = dicom_series_ids(folder)
    if not series:
        raise LWIError(f"The folder {folder} holds no DICOM series.")
    if len(series) > 1:
        counts = ", ".join(
            f"{uid} ({len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))} files)" for uid in series
        )
        raise LWIError(
            f"The folder {folder} mixes {len(series)} DICOM series ({counts}); put each series in its own folder."
        )
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
    _check_slice_spacing(folder, files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


#: Relative tolerance on the distance between neighbouring DICOM slices.
SLICE_SPACING_TOLERANCE = 0.05


def _check_slice_spacing(folder: Path, files: Sequence[str]) -> None:
    if len(files) < 3:
        return
    positions, normal = [], None
    for name in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        reader.ReadImageInformation()
        if not (reader.HasMetaDataKey("0020|0032") and reader.HasMetaDataKey("0020|0037")):
            return  # no patient geometry (e.g. secondary capture): nothing to check against
        if normal is None:
            row_col = np.array([float(v) for v in reader.GetMetaData("0020|0037").split("\\")])
            normal = np.cross(row_col[:3], row_col[3:])
        positions.append(float(np.dot(normal, [float(v) for v in reader.GetMetaData("0020|0032").split("\\")])))
    gaps = np.diff(np.sort(positions))
    step = float(np.median(gaps))
    if step <= 0 or np.all(np.abs(gaps - step) <= SLICE_SPACING_TOLERANCE * step):
        return
    missing = int(np.sum(np.round(gaps / step) - 1)) if np.all(gaps >= step * (1 - SLICE_SPACING_TOLERANCE)) else 0
    if missing > 0 and np.allclose(gaps / step, np.round(gaps / step), atol=SLICE_SPACING_TOLERANCE):
        raise LWIError(
            f"The DICOM series in {folder} misses {missing} slice(s) (gaps of up to {gaps.max():.3g} mm between "
            f"slices {step:.3g} mm apart); export the complete series."
        )
    raise LWIError(
        f"The DICOM series in {folder} has uneven slice spacing (from {gaps.min():.3g} to {gaps.max():.3g} mm); "
        "resample it to even spacing first (e.g. in Slicer), then segment or train on it."
    )


def _as_3d(image: sitk.Image, path: Path) -> sitk.Image:
    """Check (and, for a trailing singleton 4th axis, fix) that an image is a 3D scalar volume."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise LWIError(
            f"The image {path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "only single-channel 3D volumes are supported."
        )
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:
        size = list(image.GetSize())
        size[3] = 0  # Extract collapses a zero-size axis
        image = sitk.Extract(image, size, [0, 0, 0, 0])
        dim = 3
    if dim != 3:
        raise LWIError(f"The image {path} is {dim}D (size {_size_str(image)}); a 3D volume is needed.")
    if min(image.GetSize()) < 2:
        raise LWIError(f"The image {path} is a single slice (size {_size_str(image)}); a 3D volume is needed.")
    return image


def _size_str(image: sitk.Image) -> str:
    return " x ".join(str(s) for s in image.GetSize())


def affine_lps(image: Union[sitk.Image, sitk.ImageFileReader]) -> np.ndarray:
    """The 4x4 voxel-to-LPS affine of a SimpleITK image (or file reader after ReadImageInformation)."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return affine


def affine_ras(image: Union[sitk.Image, sitk.ImageFileReader]) -> np.ndarray:
    """The 4x4 voxel-to-RAS affine of a SimpleITK image (MONAI's convention)."""
    return LPS_TO_RAS @ affine_lps(image)


def image_to_metatensor(image: sitk.Image, dtype: Optional[torch.dtype] = None) -> MetaTensor:
    """Convert a 3D SimpleITK image to a MONAI MetaTensor ``[1, X, Y, Z]`` with its RAS affine.

    Args:
        image: a 3D scalar image (see :func:`read_image`).
        dtype: tensor dtype, float32 by default.
    """
    import torch
    from monai.data import MetaTensor
    from monai.utils import MetaKeys, SpaceKeys

    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise LWIError("Only single-channel 3D images can be converted to tensors.")
    array = sitk.GetArrayViewFromImage(image)  # [z, y, x]
    data = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 1, 0), dtype=np.float32))
    if dtype is not None:
        data = data.to(dtype)
    affine = torch.as_tensor(affine_ras(image), dtype=torch.float64)
    meta = {
        MetaKeys.ORIGINAL_AFFINE: affine.clone(),
        MetaKeys.SPATIAL_SHAPE: np.asarray(image.GetSize()),
        MetaKeys.SPACE: SpaceKeys.RAS,
        MetaKeys.ORIGINAL_CHANNEL_DIM: "no_channel",
    }
    return MetaTensor(data[None], affine=affine, meta=meta)


def metatensor_to_image(tensor: torch.Tensor, affine: Optional[np.ndarray] = None) -> sitk.Image:
    """Convert a ``[X, Y, Z]`` or ``[1, X, Y, Z]`` tensor to a SimpleITK image in its own geometry.

    The geometry comes from ``affine`` (RAS, 4x4) or, when omitted, from the MetaTensor's affine. Used
    to write volumes on a preprocessed (resampled, reoriented) grid with their true physical position.
    """
    import torch

    if affine is None:
        affine = getattr(tensor, "affine", None)
        if affine is None:
            raise ValueError("metatensor_to_image needs a MetaTensor or an explicit affine")
    affine = torch.as_tensor(affine).detach().cpu().double().numpy()
    data = torch.as_tensor(tensor).detach().cpu()
    if data.ndim == 4:
        if data.shape[0] != 1:
            raise ValueError(f"expected one channel, got shape {tuple(data.shape)}")
        data = data[0]
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.numpy().transpose(2, 1, 0)))
    lps = np.linalg.inv(LPS_TO_RAS) @ affine
    matrix = lps[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(d) for d in (matrix / spacing).ravel()])
    image.SetOrigin([float(o) for o in lps[:3, 3]])
    return image


def array_to_image(array_xyz, reference: sitk.Image) -> sitk.Image:
    """Place an ``[X, Y, Z]`` array (numpy or tensor) on the exact grid of ``reference``."""
    if hasattr(array_xyz, "detach"):
        array_xyz = array_xyz.detach().cpu().numpy()
    array_xyz = np.asarray(array_xyz)
    if array_xyz.ndim == 4 and array_xyz.shape[0] == 1:
        array_xyz = array_xyz[0]
    if tuple(array_xyz.shape) != tuple(reference.GetSize()):
        raise ValueError(
            f"array shape {tuple(array_xyz.shape)} does not match the reference size {reference.GetSize()}"
        )
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    image.CopyInformation(reference)
    return image


def write_image(array_xyz, reference: sitk.Image, path: PathLike, compress: bool = True) -> Path:
    """Write an ``[X, Y, Z]`` array on ``reference``'s grid (size, spacing, origin, direction).

    ``array_xyz`` may also be a SimpleITK image, which is written as is. The file appears atomically:
    it is written under a temporary name in the same folder and renamed, so an error never leaves a
    partial file at ``path``.
    """
    image = array_xyz if isinstance(array_xyz, sitk.Image) else array_to_image(array_xyz, reference)
    return write_sitk_atomic(image, path, compress=compress)


def write_sitk_atomic(image: sitk.Image, path: PathLike, compress: bool = True, option: str = "output") -> Path:
    """Write a SimpleITK image through :func:`lwi.outputs.write_file` (temporary folder + atomic
    rename; a header format's data file, ``.mhd`` + ``.raw``, is written and renamed with it)."""
    path = Path(path)

    def write(tmp: Path) -> None:
        try:
            sitk.WriteImage(image, str(tmp), compress)
        except RuntimeError as exc:  # ITK keeps the OS's reason to itself: say what it most likely was
            raise OSError(errno.EIO, write_failure_reason(path.parent, _first_line(exc)), str(path)) from None

    return write_file(path, write, option)
