"""LWI Training's "Improve <model> with the new cases" on a real scene (slicer-core) with the real core:
the panel's logic names the parent and the cases added since, plans the improvement (lwi plan --from)
and trains it (lwi train --from) into a new model whose provenance names its parent."""

from __future__ import annotations

import pytest

pytest.importorskip("slicer")

import slicer  # noqa: E402
from test_console_api import TINY, _labelled_case, console  # noqa: E402,F401


@pytest.mark.slow
def test_improve_a_model_with_a_new_case(console):  # noqa: F811
    training = slicer.util.getModuleLogic("LWITraining")
    for i in (1, 2):
        _labelled_case(f"case{i}", i)
    pairs = [(slicer.util.getNode(f"case{i}"), slicer.util.getNode(f"case{i} segmentation")) for i in (1, 2)]
    training.addCases(training.collectCasesFromNodes(pairs))
    training.train(training.trainingSet, "organs", settings=TINY, wait=True)
    parent = training.lastModelPath
    assert training.improvementInfo(parent)["trained_on"] == ["case1", "case2"]

    _labelled_case("case3", 3)  # corrected, then added
    cases = training.addCases(training.collectCasesFromNodes(
        [(slicer.util.getNode("case3"), slicer.util.getNode("case3 segmentation"))]
    ))
    info = training.improvementInfo(parent, cases)
    assert info["parent"] == "organs" and info["added"] == ["case3"]

    settings = training.improveSettings(parent, dict(TINY))
    plan = training.plan(cases, settings, wait=True, probe=False)
    assert plan["strategy"] == "improve" and plan["step1_iterations"] == 0
    assert "--from" in training.lastCommand and "--arch" not in training.lastCommand  # the parent's network

    training.improve(cases, parent, "organs-v2", settings=TINY, wait=True)
    assert training.lastModelPath.endswith("organs-v2.lwi.safetensors")
    prov = slicer.util.getModuleLogic("LWISegmentation").modelInfo(training.lastModelPath)["provenance"]
    assert prov["parent"] == "organs.lwi.safetensors" and prov["added_cases"] == ["case3"]
    assert sorted(prov["training_cases"]) == ["case1", "case2", "case3"]
    again = training.improvementInfo(training.lastModelPath, cases)
    assert again["added"] == [] and [e["model"] for e in again["lineage"]] == ["organs.lwi.safetensors"]
