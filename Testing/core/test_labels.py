"""The label table: organ colours, synonyms, fallback palette, background handling."""

from __future__ import annotations

import pytest

from lwi.labels import (
    LabelInfo,
    canonical_structure,
    default_color,
    label_table,
    labels_dict,
    table_from_dicts,
)


@pytest.mark.parametrize(
    "names",
    [
        ("left kidney", "kidney_left", "Kidney (L)", "KIDNEY-LEFT", "right kidney"),
        ("IVC", "inferior_vena_cava", "Inferior Vena Cava", "postcava"),
        ("gallbladder", "Gall bladder", "GallBladder"),
        ("esophagus", "oesophagus"),
        ("adrenal_gland_left", "Right adrenal gland", "adrenal"),
        ("urinary_bladder", "Bladder"),
        ("tumour", "Tumor", "lesion"),
        ("vertebrae_L3", "bone", "Vertebra"),
    ],
)
def test_synonyms_share_the_usual_colour(names):
    colors = {default_color(name, 7) for name in names}
    assert len(colors) == 1, dict((n, default_color(n, 7)) for n in names)


def test_well_known_organs_get_their_own_colours_not_the_fallback():
    organs = ["liver", "spleen", "kidney", "pancreas", "stomach", "gallbladder", "aorta", "IVC", "esophagus",
              "adrenal gland", "duodenum", "bladder", "lung", "heart", "bone", "hippocampus anterior",
              "hippocampus posterior", "brain", "prostate", "tumor"]
    colors = {name: default_color(name, 1) for name in organs}
    # The colour depends on the name, not on the label value.
    assert all(default_color(name, 9) == colors[name] for name in organs)
    # Distinct organs that sit next to each other are distinguishable.
    for a, b in [("liver", "spleen"), ("liver", "kidney"), ("aorta", "IVC"), ("stomach", "pancreas"),
                 ("hippocampus anterior", "hippocampus posterior")]:
        assert colors[a] != colors[b]
    for c in colors.values():
        assert len(c) == 3 and all(0 <= v <= 255 for v in c)


def test_liver_has_a_liver_like_colour():
    r, g, b = default_color("Liver", 1)
    assert r > g > 0 and r > b  # reddish brown, as in Slicer


def test_msd_hippocampus_names_are_recognised():
    assert canonical_structure("anterior") == "hippocampus anterior"
    assert canonical_structure("Posterior") == "hippocampus posterior"


def test_compound_names_pick_the_specific_structure():
    assert canonical_structure("lung_upper_lobe_left") == "lung"
    assert canonical_structure("kidney_cyst_left") == "cyst"
    assert canonical_structure("portal_vein_and_splenic_vein") == "portal vein"
    assert canonical_structure("brachiocephalic_trunk_xyz") is None


def test_unknown_names_get_distinct_fallback_colours():
    colors = [default_color(f"structure {i}", i) for i in range(1, 60)]
    assert len(set(colors)) == len(colors)


def test_label_table_excludes_background_and_keeps_every_segment_distinguishable():
    labels = {0: "background", 1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "thing"}
    table = label_table(labels)
    assert [info.value for info in table] == [1, 2, 3, 4, 5]
    assert [info.name for info in table] == ["spleen", "kidney_right", "kidney_left", "gallbladder", "thing"]
    assert len({info.color for info in table}) == len(table)  # both kidneys, yet distinguishable
    assert table[1].color == default_color("kidney", 2)
    with_bg = label_table(labels, include_background=True)
    assert with_bg[0].value == 0 and with_bg[0].name == "background"


def test_label_table_accepts_json_string_keys_and_round_trips():
    table = label_table({"2": "liver", "1": "spleen"})  # as read from dataset.json, out of order
    assert [info.value for info in table] == [1, 2]
    again = table_from_dicts([info.to_dict() for info in table])
    assert again == table
    assert labels_dict(again) == {1: "spleen", 2: "liver"}
    assert LabelInfo(1, "x", (255, 0, 51)).color_float == pytest.approx((1.0, 0.0, 0.2))
