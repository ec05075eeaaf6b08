"""Scene <-> file between Slicer's nodes and the core's files (MRML, no Qt).

Slicer is imported inside the functions, so ``import LWICommon.mrml`` works anywhere; calling them
needs a scene (``slicer.mrmlScene``) with Slicer's module logics: Slicer itself, or the slicer-core
harness of the tests. Nothing here uses Qt, so every function runs in that harness. The plain parts
(names, colours, terminology) are in :mod:`LWICommon.labels`.

- :func:`writeVolumeNode`: a volume (or label map) node -> NRRD with its exact grid.
- :func:`loadVolume`: a file -> a new volume node (through the Volumes module logic).
- :func:`importLabelmap`: the core's label map -> a segmentation node with named, coloured segments,
  standard terminology, the input's reference geometry and parent transform, and closed surfaces.
- :func:`writeSegmentsAsLabelmap`: segments -> a label-map file on a volume's grid (training cases).
- :func:`forgetFiles`: detach loaded nodes from temporary files, so Save Data writes them.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

from LWICommon.labels import SegmentSpec, color_table_rows, unique_names

#: vtkSlicerVolumesLogic::AddArchetypeVolume's loadingOptions bit for "load as a label map".
_LABELMAP_OPTION = 1


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


def loadVolume(path: str, name: str, labelmap: bool = False):
    """Load a volume file as a new (label map) volume node with a display node, shown nowhere.

    Uses the Volumes module logic (what Slicer's volume reader calls), not the Qt IO manager.
    """
    import slicer

    node = slicer.modules.volumes.logic().AddArchetypeVolume(path, name, _LABELMAP_OPTION if labelmap else 0)
    if node is None:
        raise RuntimeError(f"Could not load the volume {path}.")
    return node


def forgetFiles(node) -> None:
    """Detach ``node`` from the (temporary) file it was loaded from: without a storage node it counts
    as modified, so Save Data writes it instead of pointing at a file that is deleted."""
    import slicer

    storageNode = node.GetStorageNode()
    if storageNode is not None:
        node.SetAndObserveStorageNodeID(None)
        slicer.mrmlScene.RemoveNode(storageNode)


def removeNodes(nodes: Sequence) -> None:
    """Remove nodes with their display and storage nodes (MRML leaves those behind otherwise)."""
    import slicer

    for node in nodes:
        if node is None or node.GetScene() is None:
            continue
        extra = []
        for getCount, getNth in (
            ("GetNumberOfDisplayNodes", "GetNthDisplayNode"),
            ("GetNumberOfStorageNodes", "GetNthStorageNode"),
        ):
            if hasattr(node, getCount):
                extra += [getattr(node, getNth)(i) for i in range(getattr(node, getCount)())]
        slicer.mrmlScene.RemoveNode(node)
        for other in extra:
            if other is not None and other.GetScene() is not None:
                slicer.mrmlScene.RemoveNode(other)


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
    """Put ``node`` in the same subject hierarchy folder (patient/study) as ``referenceNode``, and
    under the same parent transform, so both show in the same place."""
    import slicer

    node.SetAndObserveTransformNodeID(referenceNode.GetTransformNodeID())
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
    hierarchy and parent transform. ``segmentationNode`` is reused (its segments replaced) when
    given. ``show3D`` builds the closed surface, so the segments show in the 3D view. Only the
    segmentation node (and its display node) stays in the scene.
    """
    import slicer

    specs = [
        SegmentSpec(s.value, n, s.color, s.terminology)
        for s, n in zip(specs, unique_names(s.name for s in specs))
    ]
    if name is None:
        name = referenceVolumeNode.GetName() + " segmentation"
    labelmapNode = loadVolume(path, name + " import", labelmap=True)
    colorTableNode = _colorTableNode(specs, name + " labels")
    try:
        labelmapNode.GetDisplayNode().SetAndObserveColorNodeID(colorTableNode.GetID())
        if segmentationNode is None:
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
            segmentationNode.CreateDefaultDisplayNodes()
        else:
            segmentationNode.GetSegmentation().RemoveAllSegments()
        # The label map is on the reference's own grid, so it belongs under the reference's parent
        # transform; with the segmentation there too, the import resamples nothing and the reference
        # geometry is stored in the segmentation's own frame (not transformed a second time).
        placeNextTo(labelmapNode, referenceVolumeNode)
        placeNextTo(segmentationNode, referenceVolumeNode)
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
        segmentationNode.SetNodeReferenceID(
            segmentationNode.GetReferenceImageGeometryReferenceRole(), referenceVolumeNode.GetID()
        )
        if not slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(
            labelmapNode, segmentationNode
        ):
            raise RuntimeError(f"Could not import the label map {path} as segments.")
    finally:
        removeNodes([labelmapNode, colorTableNode])

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
    if show3D:
        segmentationNode.CreateClosedSurfaceRepresentation()
    return segmentationNode


def segmentNames(segmentationNode) -> List[str]:
    """The names of a segmentation's segments, in order."""
    segmentation = segmentationNode.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]


def writeSegmentsAsLabelmap(segmentationNode, referenceVolumeNode, path: str, segmentIds=None) -> List[str]:
    """Write segments as a label-map file on ``referenceVolumeNode``'s grid (its full extent, parent
    transforms resolved by Slicer): the i-th segment of ``segmentIds`` (default: all, in order) gets
    the value i + 1. Returns the written segments' names in that order. Adds nothing to the scene.
    """
    import slicer
    import vtk

    segmentation = segmentationNode.GetSegmentation()
    if segmentIds is None:
        segmentIds = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    ids = vtk.vtkStringArray()
    for segmentId in segmentIds:
        ids.InsertNextValue(segmentId)
    colorNodesBefore = {node.GetID() for node in slicer.util.getNodesByClass("vtkMRMLColorTableNode")}
    labelmapNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "LWI export")
    try:
        if not slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
            segmentationNode, ids, labelmapNode, referenceVolumeNode
        ):
            raise RuntimeError(f"Could not export the segments of {segmentationNode.GetName()}.")
        writeVolumeNode(labelmapNode, path)
    finally:
        # The export adds a "<name>_ColorTable" node for the label map: remove it with the label map.
        removeNodes([labelmapNode])
        removeNodes([node for node in slicer.util.getNodesByClass("vtkMRMLColorTableNode") if node.GetID() not in colorNodesBefore])
    return [segmentation.GetSegment(segmentId).GetName() for segmentId in segmentIds]
