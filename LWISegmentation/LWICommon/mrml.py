"""Node <-> file round trip between the Slicer scene and the core's files (needs Slicer).

Slicer is imported inside the functions, so ``import LWICommon.mrml`` works anywhere; calling them
needs a running Slicer. The plain parts (names, colours, terminology) are in :mod:`LWICommon.labels`.
"""

from __future__ import annotations

from typing import Optional, Sequence

from LWICommon.labels import SegmentSpec, color_table_rows, unique_names


def writeVolumeNode(volumeNode, path: str) -> str:
    """Write a volume node to ``path`` (NRRD) with its exact geometry: size, spacing, origin and
    axis directions (IJK-to-RAS), without adding anything to the scene.

    A parent transform is not applied (the file holds the node's own grid); :func:`importLabelmap`
    puts the result under the same transform.
    """
    import slicer

    storageNode = slicer.mrmlScene.CreateNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storageNode.UnRegister(None)  # owned by the Python variable, never added to the scene
    storageNode.SetFileName(path)
    storageNode.UseCompressionOff()  # speed: the file lives only as long as the run
    if not storageNode.WriteData(volumeNode):
        raise RuntimeError(f"Could not write volume '{volumeNode.GetName()}' to {path}.")
    return path


def _colorTableNode(specs: Sequence[SegmentSpec], name: str):
    import slicer

    rows = color_table_rows(specs)
    colorTableNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    colorTableNode.SetTypeToUser()
    colorTableNode.SetNumberOfColors(max(value for value, _, _ in rows) + 1)
    for value, rowName, (r, g, b) in rows:
        colorTableNode.SetColor(value, rowName, r, g, b, 0.0 if value == 0 else 1.0)
    return colorTableNode


def placeNextTo(node, referenceNode) -> None:
    """Put ``node`` in the same subject hierarchy folder (patient/study) as ``referenceNode``."""
    import slicer

    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    referenceItem = shNode.GetItemByDataNode(referenceNode)
    item = shNode.GetItemByDataNode(node)
    if referenceItem and item:
        shNode.SetItemParent(item, shNode.GetItemParent(referenceItem))


def importLabelmap(
    path: str,
    specs: Sequence[SegmentSpec],
    referenceVolumeNode,
    segmentationNode=None,
    name: Optional[str] = None,
    show3D: bool = False,
):
    """Import a label map file as a segmentation node: one named, coloured segment per label value
    present, with standard terminology where one fits.

    The reference volume gives the segmentation's reference geometry and its place in the subject
    hierarchy (and parent transform). ``segmentationNode`` is reused (its segments replaced) when
    given. ``show3D`` builds the closed surface, so the segments show in the 3D view.
    """
    import slicer

    specs = [
        SegmentSpec(s.value, n, s.color, s.terminology)
        for s, n in zip(specs, unique_names(s.name for s in specs))
    ]
    if name is None:
        name = referenceVolumeNode.GetName() + " segmentation"
    labelmapNode = slicer.util.loadLabelVolume(path, {"show": False})
    colorTableNode = _colorTableNode(specs, name + " labels")
    try:
        labelmapNode.GetDisplayNode().SetAndObserveColorNodeID(colorTableNode.GetID())
        if segmentationNode is None:
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
            segmentationNode.CreateDefaultDisplayNodes()
        else:
            segmentationNode.GetSegmentation().RemoveAllSegments()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
        segmentationNode.SetNodeReferenceID(
            segmentationNode.GetReferenceImageGeometryReferenceRole(), referenceVolumeNode.GetID()
        )
        if not slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(
            labelmapNode, segmentationNode
        ):
            raise RuntimeError(f"Could not import the label map {path} as segments.")
    finally:
        slicer.mrmlScene.RemoveNode(labelmapNode)
        slicer.mrmlScene.RemoveNode(colorTableNode)

    byName = {spec.name: spec for spec in specs}
    segmentation = segmentationNode.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        spec = byName.get(segment.GetName())
        if spec is None:
            continue
        if spec.color is not None:
            segment.SetColor(*spec.color)
        if spec.terminology:
            segment.SetTag(segment.GetTerminologyEntryTagName(), spec.terminology)

    transformID = referenceVolumeNode.GetTransformNodeID()
    if transformID:
        segmentationNode.SetAndObserveTransformNodeID(transformID)
    placeNextTo(segmentationNode, referenceVolumeNode)
    if show3D:
        segmentationNode.CreateClosedSurfaceRepresentation()
    return segmentationNode
