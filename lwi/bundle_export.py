"""Export an LWI model as a MONAI Bundle that MONAI's own tools run (``lwi export --format monai-bundle``).

The bundle folder::

    configs/metadata.json    labels (channel_def), network, input format, versions (MONAI's bundle spec)
    configs/inference.json   network_def, preprocessing, inferer, postprocessing, run: MONAI components only
    models/model.pt          the network's state dict (torch.save; the MONAI network's own keys)
    models/model.ts          TorchScript of the network, when it scripts (else traces; else left out), with
                             both configs inside (extra/metadata.json, extra/inference.json) as MONAI's
                             ckpt_export writes it, for MONAI Deploy
    docs/README.md           what the bundle is and how to run it

The network is the plain MONAI class the LWI adapter wraps (``monai.networks.nets.SegResNet``, ...), built
with the same arguments; the adapter adds no computation (:mod:`lwi.architectures.base`), so its state
dict is the network's with a ``net.`` prefix, which is dropped. The bundle needs MONAI, not LWI.

``inference.json`` repeats what ``lwi segment`` does (:mod:`lwi.inference`), with MONAI transforms:

1. ``LoadImaged`` + ``EnsureChannelFirstd``, then the model's :func:`lwi.data.preprocessing.build_transforms`
   steps with the same arguments (``CropForegroundd`` on voxels above the lower CT window bound, or above
   0 for MR; ``Orientationd``; ``Spacingd`` bilinear; ``ScaleIntensityRanged`` or ``NormalizeIntensityd``);
2. ``SlidingWindowInferer`` with the model's window, overlap, window batch and Gaussian blending; ``run``
   pads a volume smaller than the window with its minimum, as ``lwi segment`` does
   (:func:`lwi.data.preprocessing.background_value`); other MONAI tools use the inferer's fixed ``cval``;
3. ``Invertd`` of the logits back to the input grid (trilinear), then ``AsDiscreted(argmax=True)``: the
   labels :func:`lwi.resampling.resample_argmax` computes (the argmax of trilinearly resampled logits);
4. ``SaveImaged`` writes ``<name>_seg.nii.gz`` (label values = output channels) into ``output_dir``.

What differs from ``lwi segment`` (measured in ``Testing/core/test_monai_bundle.py``): MONAI reads the
image with its own reader (nibabel for NIfTI) where LWI uses SimpleITK; voxels within half a voxel outside
the cropped network grid are extrapolated by MONAI's inverse resampling where LWI gives the border value;
no float16 autocast (LWI uses it on CUDA); no ``--largest-component`` or ``--mirror`` (opt-in options of
``lwi segment``: the bundle repeats its defaults).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from lwi.errors import LWIError
from lwi.outputs import current_umask, follow_umask

PathLike = Union[str, "os.PathLike[str]"]

#: MONAI's bundle metadata schema this export follows (the Model Zoo's current one).
METADATA_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
)
FORMATS = ("monai-bundle",)


def network_def(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The ``network_def`` component of a bundle spec: the MONAI class and the arguments the adapter used."""
    from lwi.architectures import build

    adapter = build(**spec)
    net = adapter.net
    kwargs: Dict[str, Any] = {
        "spatial_dims": 3, "in_channels": adapter.in_channels, "out_channels": adapter.out_channels,
        **adapter.monai_kwargs(),
    }
    if adapter.name == "unetr":
        kwargs["img_size"] = list(adapter.roi_size)
    target = f"{type(net).__module__.split('.')[0]}.networks.nets.{type(net).__name__}"
    return {"_target_": target, **json.loads(json.dumps(kwargs))}


def monai_state_dict(adapter: Any) -> Dict[str, Any]:
    """The adapter's weights under the MONAI network's own keys (the ``net.`` prefix dropped)."""
    state = adapter.state_dict()
    foreign = [k for k in state if not k.startswith("net.")]
    if foreign:
        raise LWIError(f"The model has weights outside its MONAI network ({foreign[0]}, ...); it cannot be exported.")
    return {k[len("net."):]: v.detach().cpu().clone() for k, v in state.items()}


def _preprocessing(config: Any) -> Dict[str, Any]:
    """``build_transforms`` (lwi.data.preprocessing) as MONAI config components, after loading the image."""
    transforms: List[Dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
    ]
    if config.crop_foreground:
        threshold = float(config.ct_window[0]) if config.modality == "CT" else 0.0
        # lwi's select function also keeps everything when nothing passes the threshold (never an empty crop)
        transforms.append({
            "_target_": "CropForegroundd", "keys": "image", "source_key": "image", "allow_smaller": True,
            "select_fn": f"$lambda x: (x > {threshold!r}) if bool((x > {threshold!r}).any()) else (x == x)",
        })
    transforms.append({
        "_target_": "Orientationd", "keys": "image", "axcodes": config.orientation,
        "labels": [["L", "R"], ["P", "A"], ["I", "S"]],
    })
    if config.spacing is not None:
        transforms.append({
            "_target_": "Spacingd", "keys": "image", "pixdim": list(config.spacing), "mode": "bilinear",
            "dtype": "$np.float32",
        })
    if config.modality == "CT":
        low, high = config.ct_window
        transforms.append({
            "_target_": "ScaleIntensityRanged", "keys": "image", "a_min": float(low), "a_max": float(high),
            "b_min": 0.0, "b_max": 1.0, "clip": True,
        })
    else:
        transforms.append({"_target_": "NormalizeIntensityd", "keys": "image", "channel_wise": True})
    transforms.append({"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"})
    return {"_target_": "Compose", "transforms": transforms}


def inference_config(metadata: Dict[str, Any]) -> Dict[str, Any]:
    """The ``configs/inference.json`` of a bundle's metadata (see the module docstring)."""
    from lwi.data.preprocessing import PreprocessConfig

    spec = metadata["architecture"]
    inference = metadata.get("inference", {})
    config = PreprocessConfig.from_dict(metadata.get("preprocessing", {}))
    roi = [int(s) for s in inference.get("roi_size", spec["roi_size"])]
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "dataset_dir": "$@bundle_root + '/sample'",
        "datalist": "$sorted(glob.glob(os.path.join(@dataset_dir, '*.nii.gz')) + glob.glob(os.path.join(@dataset_dir, '*.nii')))",
        "output_dir": "$@bundle_root + '/eval'",
        "network_def": network_def(spec),
        "network": "$@network_def.to(@device)",
        "preprocessing": _preprocessing(config),
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "inferer": {
            "_target_": "SlidingWindowInferer", "roi_size": roi,
            "sw_batch_size": int(inference.get("sw_batch_size", 4)), "overlap": float(inference.get("overlap", 0.5)),
            "mode": "gaussian", "cval": 0.0,
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                # The logits go back to the input grid (trilinear), then argmax: as lwi.resampling.resample_argmax.
                {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
                 "nearest_interp": False, "to_tensor": True},
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
                 "output_dtype": "$np.uint8" if int(spec["out_channels"]) <= 256 else "$np.uint16",
                 "resample": False, "separate_folder": False},
            ],
        },
        # As lwi segment: windows of a volume smaller than the ROI are padded with its minimum.
        # torch.no_grad() as a decorator: no gradients during the run without switching them off for the
        # whole process (an in-process monai.bundle.run would otherwise leave autograd off for its caller).
        "predict": "$torch.no_grad()(lambda d: @postprocessing({**d, 'pred': (setattr(@inferer, 'cval', "
                   "float(d['image'].min())), @inferer(d['image'][None].to(@device), @network))[1][0]}))",
        "checkpoint": "$torch.load(@bundle_root + '/models/model.pt', map_location=@device, weights_only=True)",
        "initialize": ["$@network.load_state_dict(@checkpoint)", "$@network.eval()"],
        "run": ["$[@predict(d) for d in @dataset]"],
    }


def metadata_json(metadata: Dict[str, Any]) -> Dict[str, Any]:
    """The ``configs/metadata.json`` (MONAI bundle spec) of a bundle's metadata."""
    import monai
    import numpy
    import torch

    from lwi import __version__
    from lwi.bundle import bundle_labels

    spec = metadata["architecture"]
    pre = metadata.get("preprocessing", {})
    modality = str(pre.get("modality", "CT")).upper()
    roi = [int(s) for s in metadata.get("inference", {}).get("roi_size", spec["roi_size"])]
    channels = {"0": "background"}
    channels.update({str(info.value): info.name for info in bundle_labels(metadata)})
    for value in range(int(spec["out_channels"])):
        channels.setdefault(str(value), f"label {value}")  # every output channel named, as MONAI Label reads them
    provenance = metadata.get("provenance", {})
    return {
        "schema": METADATA_SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by lwi {__version__} from an LWI model"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {"nibabel": _version("nibabel")},
        "name": f"LWI {spec['arch']} segmentation",
        "task": f"{modality} segmentation of {', '.join(v for k, v in sorted(channels.items(), key=lambda kv: int(kv[0])) if k != '0')}",
        "description": (
            f"A {spec['arch']} trained with LWI (strategy {provenance.get('strategy', 'unknown')}); "
            "configs/inference.json repeats lwi segment's preprocessing, sliding window and inversion."
        ),
        "authors": "LWI",
        "copyright": "see the model's source",
        "data_type": "nibabel",
        "image_classes": f"single channel {modality} volume, {'HU' if modality == 'CT' else 'magnitude'}",
        "label_classes": "; ".join(f"{k}: {v}" for k, v in sorted(channels.items(), key=lambda kv: int(kv[0]))),
        "pred_classes": "one channel per label, argmax over channels = label value",
        "eval_metrics": {f"val_dice_{k}": v for k, v in (provenance.get("validation_dice") or {}).items()
                         if isinstance(v, (int, float))},
        "intended_use": "research only; not for clinical use",
        "references": ["Kunhimon et al., Learnable Weight Initialization for Volumetric Medical Image Segmentation"],
        "lwi": {"architecture": spec, "preprocessing": pre, "inference": metadata.get("inference", {})},
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image", "format": "hounsfield" if modality == "CT" else "magnitude", "modality": modality,
                    "num_channels": int(spec.get("in_channels", 1)), "spatial_shape": roi, "dtype": "float32",
                    "value_range": [0, 1] if modality == "CT" else [], "is_patch_data": True,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image", "format": "segmentation", "num_channels": int(spec["out_channels"]),
                    "spatial_shape": roi, "dtype": "float32", "value_range": [], "is_patch_data": True,
                    "channel_def": channels,
                }
            },
        },
    }


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return ""


def torchscript(net: Any, window: Any, expected: Any) -> Tuple[Optional[Any], str]:
    """``(module, how)``: the network scripted, else traced on ``window``, when the result gives ``expected``
    on ``window``; else ``(None, why)``."""
    import torch

    attempts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's own deprecation and tracer notes
        for how, verb in (("scripted", "scripting"), ("traced", "tracing")):
            try:
                with torch.no_grad():
                    module = torch.jit.script(net) if how == "scripted" else torch.jit.trace(net, window, check_trace=False)
                    same = torch.allclose(module(window), expected, atol=1e-5, rtol=1e-4)
            except Exception as exc:  # noqa: BLE001 - TorchScript fails in many ways; the next way is tried
                attempts.append(f"{verb}: {type(exc).__name__}")
                continue
            if same:
                return module, how
            attempts.append(f"{verb}: a different output")
    return None, "left out (" + "; ".join(attempts) + ")"


def export_monai_bundle(model_path: PathLike, out: PathLike) -> Dict[str, str]:
    """Write the MONAI Bundle of the model at ``model_path`` into the folder ``out``.

    The folder is assembled beside ``out`` and renamed into place, so a failure leaves nothing at ``out``.
    Before writing, the exported network is built from ``network_def`` alone, loaded with the state dict
    strictly, and must give the LWI network's output on a random window (else :class:`LWIError`).

    Returns:
        ``{"torchscript": "scripted" | "traced" | why it is missing}``.
    """
    import torch
    from monai.bundle import ConfigParser

    from lwi.bundle import load_bundle

    adapter, metadata = load_bundle(model_path, device="cpu")
    spec = metadata["architecture"]
    state = monai_state_dict(adapter)
    config = inference_config(metadata)
    # The check a MONAI user's runner does: network_def alone builds a network that takes these weights.
    parser = ConfigParser({"network_def": config["network_def"]})
    net = parser.get_parsed_content("network_def")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise LWIError(f"The MONAI network of {model_path} does not take its weights ({str(exc).splitlines()[0]}).") from None
    net.eval()
    roi = [int(s) for s in spec["roi_size"]]
    window = torch.randn(1, int(spec["in_channels"]), *roi, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = adapter(window), net(window)
    if not torch.allclose(expected, got, atol=1e-5, rtol=1e-4):
        raise LWIError(f"The exported MONAI network of {model_path} does not reproduce the LWI network; it cannot be exported.")
    scripted, how = torchscript(net, window, expected)

    out = Path(out)
    old: Optional[Path] = None
    out.parent.mkdir(parents=True, exist_ok=True)  # the command removes it again if the export fails
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (staging / "configs").mkdir()
        (staging / "models").mkdir()
        (staging / "docs").mkdir()
        _write_json(staging / "configs" / "inference.json", config)
        meta = metadata_json(metadata)
        _write_json(staging / "configs" / "metadata.json", meta)
        # Serialised in memory, then written: a failed write is an OSError naming the file (torch's
        # writer reports a full disk or a file-size limit as an internal RuntimeError).
        buffer = io.BytesIO()
        torch.save(state, buffer)
        (staging / "models" / "model.pt").write_bytes(buffer.getvalue())
        if scripted is not None:
            # As MONAI's ckpt_export: metadata and inference config inside the TorchScript file (extra/),
            # where MONAI Deploy's MonaiBundleInferenceOperator reads them.
            from monai.data import save_net_with_metadata

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.9 points to torch.export
                buffer = io.BytesIO()
                save_net_with_metadata(
                    scripted, buffer, include_config_vals=False,
                    meta_values=meta, more_extra_files={"inference.json": json.dumps(config).encode()},
                )
            (staging / "models" / "model.ts").write_bytes(buffer.getvalue())
        (staging / "docs" / "README.md").write_text(_readme(Path(model_path).name, how), encoding="utf-8")
        for path in staging.rglob("*"):
            if path.is_file():
                follow_umask(path)
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp's folder is private; a bundle is meant to be shared
        # --overwrite was checked by the command: the old bundle is moved aside, and back if the new
        # one cannot be put in place, so a failure leaves it as it was.
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent)) if out.exists() else None
        if old is not None:
            os.replace(out, old / out.name)
        try:
            os.replace(staging, out)
        except BaseException:
            if old is not None:
                os.replace(old / out.name, out)
            raise
    except OSError as exc:
        if exc.filename is None:  # a failed write() names no file: name the bundle
            raise OSError(exc.errno, exc.strerror or str(exc), str(out)) from None
        raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return {"torchscript": how}


def _write_json(path: Path, value: Dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def _readme(model_name: str, torchscript_how: str) -> str:
    return (
        f"# MONAI Bundle of the LWI model {model_name}\n\n"
        "Exported by `lwi export --format monai-bundle`. It needs MONAI (and nibabel), not LWI.\n\n"
        "Run it on every `.nii.gz` of a folder (labels go to `OUT/<name>_seg.nii.gz`), from this folder:\n\n"
        "    python -m monai.bundle run --config_file configs/inference.json --dataset_dir IN --output_dir OUT\n\n"
        "(`python -m monai.bundle` needs the `fire` package.) `configs/inference.json` repeats `lwi segment`'s "
        "preprocessing, sliding window and inversion; `models/model.pt` is the network's state dict; "
        f"`models/model.ts`: TorchScript ({torchscript_how}).\n"
    )
