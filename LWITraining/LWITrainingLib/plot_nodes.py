"""The live training plot as MRML nodes: table nodes and one chart (MRML, no Qt).

:class:`LWITrainingLib.plots.TrainingCurves` turns progress events into tables (plain Python);
:class:`TrainingPlot` copies them into ``vtkMRMLTableNode`` s and draws one coloured line per series
in a ``vtkMRMLPlotChartNode``. Showing the chart in a layout is the caller's (Qt) business.
"""

from __future__ import annotations

from typing import Dict

CHART_NAME = "LWI training"


class TrainingPlot:
    """The chart of one training run, updated in place as the curves grow."""

    def __init__(self) -> None:
        self.chartNode = None
        self.tableNodes: Dict[str, object] = {}
        self.seriesNodes: Dict[str, object] = {}

    def update(self, curves) -> bool:
        """Copy ``curves`` (a :class:`LWITrainingLib.plots.TrainingCurves`) into the nodes; returns True
        when the chart node was (re)created, i.e. it should be shown."""
        import numpy as np
        import slicer
        from LWITrainingLib.plots import X_COLUMN

        created = self.chartNode is None or self.chartNode.GetScene() is None
        if created:
            self.chartNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotChartNode", CHART_NAME)
            self.chartNode.SetTitle("LWI training: losses and validation Dice")
            self.chartNode.SetXAxisTitle("epoch")
            self.chartNode.SetYAxisTitle("loss / Dice")
            self.tableNodes, self.seriesNodes = {}, {}
        for table in ("step1", "step2", "validation"):
            columns, rows = curves.table(table)
            if not rows:
                continue
            if table not in self.tableNodes:
                self.tableNodes[table] = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", f"{CHART_NAME} {table}")
            slicer.util.updateTableFromArray(self.tableNodes[table], np.asarray(rows, dtype=float), columns)
        for spec in curves.series():
            if spec.name in self.seriesNodes:
                continue
            seriesNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", spec.name)
            seriesNode.SetAndObserveTableNodeID(self.tableNodes[spec.table].GetID())
            seriesNode.SetXColumnName(X_COLUMN)
            seriesNode.SetYColumnName(spec.column)
            seriesNode.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            seriesNode.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
            seriesNode.SetUniqueColor()  # series start black: one colour per curve
            self.chartNode.AddAndObservePlotSeriesNodeID(seriesNode.GetID())
            self.seriesNodes[spec.name] = seriesNode
        return created
