"""LWI Training's parameter node: the panel's settings, saved with the scene, and their choices
(the core's names, read from ``lwi/names.py`` without importing the core)."""

from __future__ import annotations

import pathlib
from typing import Annotated

from LWICommon.vocabulary import names
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

ROI_SIZES = [0, 32, 64, 96, 128, 160]  # 0: auto, the plan decides (lwi plan)
STRATEGIES = list(names.STRATEGY_CHOICES)  # the core's registry; "auto": the plan decides (lwi plan)
ARCHITECTURES = list(names.ARCHITECTURE_CHOICES)  # "auto": the plan decides (lwi plan)
DEVICES = list(names.DEVICE_CHOICES)
INTENSITY_PRESETS = list(names.MODALITY_CHOICES)


@parameterNodeWrapper
class LWITrainingParameterNode:
    """The module's settings, saved with the scene.

    caseVolume, caseSegmentation: a volume and its segmentation to add as one training case.
    dataFolder: a dataset folder whose cases are added (MSD layout or imagesTr/ + labelsTr/).
    modelsFolder: where the trained model is written (empty: the application setting, else ~/LWI/models).
    modelName: the model's file name (without ``.lwi.safetensors``).
    strategy, architecture, pretrainEpochs (Step 1), epochs (Step 2), roiSize, targetSpacing (mm, empty:
    the plan's), intensityPreset, device, timeBudget (e.g. "20m"): the main ``lwi train`` settings.
    learningRate, maskRatio, cubeSize, batchSize: the advanced ones.
    "auto" / 0 / empty: not passed to ``lwi train``, whose plan decides (the same defaults as the CLI).
    """

    caseVolume: vtkMRMLScalarVolumeNode
    caseSegmentation: vtkMRMLSegmentationNode
    dataFolder: pathlib.Path
    modelsFolder: pathlib.Path
    modelName: str = "model"
    strategy: Annotated[str, Choice(STRATEGIES)] = names.DEFAULT_STRATEGY
    architecture: Annotated[str, Choice(ARCHITECTURES)] = "auto"
    pretrainEpochs: Annotated[int, WithinRange(0, 100000)] = 0
    epochs: Annotated[int, WithinRange(0, 100000)] = 0
    roiSize: Annotated[int, Choice(ROI_SIZES)] = 0
    targetSpacing: str = ""
    intensityPreset: Annotated[str, Choice(INTENSITY_PRESETS)] = "auto"
    device: Annotated[str, Choice(DEVICES)] = "auto"
    # 0 = auto (the plan's learning rate); the spin box shows it as "auto (plan)".
    learningRate: Annotated[float, WithinRange(0.0, 1.0)] = 0.0
    maskRatio: Annotated[float, WithinRange(0.0, 0.95)] = 0.4
    cubeSize: Annotated[int, WithinRange(0, 64)] = 0
    batchSize: Annotated[int, WithinRange(0, 64)] = 0
    timeBudget: str = ""
