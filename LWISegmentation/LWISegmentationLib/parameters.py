"""LWI Segmentation's parameter node: the panel's settings, saved with the scene."""

from __future__ import annotations

import pathlib
from typing import Annotated

from LWICommon.vocabulary import names
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

DEVICES = list(names.DEVICE_CHOICES)


@parameterNodeWrapper
class LWISegmentationParameterNode:
    """The module's settings, saved with the scene.

    inputVolume: the volume to segment.
    outputSegmentation: the segmentation to (re)fill; a new one is created when empty.
    modelPath: the model bundle (``.lwi.safetensors``).
    device: where the network runs.
    show3D: show the result in the 3D view.
    showUncertainty: also show the uncertainty map over the volume and the result's score.
    numSubvolumes: preview: N axial sub-volumes (0: as the model).
    maskRatio: preview: fraction of masked cubes.
    cubeSize: preview: mask cube edge in voxels.
    correctedSegmentation: Add to training set: the corrected segmentation of the input volume.
    trainingFolder: Add to training set: the folder of labelled cases (default ~/LWI/training-cases).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    modelPath: pathlib.Path
    device: Annotated[str, Choice(DEVICES)] = "auto"
    show3D: bool = True
    showUncertainty: bool = False
    numSubvolumes: Annotated[int, WithinRange(0, 64)] = 0
    maskRatio: Annotated[float, WithinRange(0.0, 0.95)] = 0.4
    cubeSize: Annotated[int, WithinRange(1, 128)] = 16
    correctedSegmentation: vtkMRMLSegmentationNode
    trainingFolder: pathlib.Path
