"""Family assignment by module class: first match wins, head protected, DFL fixed, bad rules files refused."""

from __future__ import annotations

import pytest
import torch.nn as nn

from ultra_sparse.rules import assign_families, load_rules, preset_names


class Conv(nn.Module):
    """Stands in for a user's plain Conv block (matched by class name, like Ultralytics' Conv)."""

    def __init__(self, c1=4, c2=4):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, 3, bias=False)
        self.bn = nn.BatchNorm2d(c2)


class LSConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.cv = Conv()


class TokenC3(nn.Module):
    """A user's TokenC3 holding an LSConv and a plain Conv: everything inside is 'tokenc3'."""

    def __init__(self):
        super().__init__()
        self.cv1 = Conv()
        self.m = LSConv()


class AdaHyperedgeGen(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)


class HyperACE(nn.Module):
    def __init__(self):
        super().__init__()
        self.gen = AdaHyperedgeGen()
        self.cv = Conv()


class FullPAD_Tunnel(nn.Module):  # noqa: N801 (the class name users have)
    def __init__(self):
        super().__init__()
        self.cv = Conv()


class DSConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(4, 4, 3, groups=4)
        self.pw = nn.Conv2d(4, 4, 1)


class DSC3k2(nn.Module):
    def __init__(self):
        super().__init__()
        self.m = DSConv()
        self.cv2 = Conv()


class A2C2f(nn.Module):
    def __init__(self):
        super().__init__()
        self.cv1 = Conv()


class DFL(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(16, 1, 1, bias=False)


class Detect(nn.Module):
    def __init__(self):
        super().__init__()
        self.cv2 = nn.ModuleList([Conv(), DSConv()])  # a DSConv in the head is still head
        self.dfl = DFL()


class Segment(Detect):
    """A Detect subclass: protected through its base class."""


class Net(nn.Module):
    def __init__(self, head=Detect):
        super().__init__()
        self.model = nn.Sequential(TokenC3(), HyperACE(), FullPAD_Tunnel(), DSC3k2(), A2C2f(), Conv(), nn.Linear(4, 4), head())
        for i, m in enumerate(self.model):
            m.i = i


def families(model, rules="tokenc3_lsnet"):
    return {w.name: w.family for w in assign_families(model, load_rules(rules)).weights}


def test_families_by_class_on_nested_custom_blocks():
    f = families(Net())
    assert f["model.0.cv1.conv.weight"] == "tokenc3"
    assert f["model.0.m.cv.conv.weight"] == "tokenc3"  # LSConv inside TokenC3
    assert f["model.1.gen.proj.weight"] == "hyperace"
    assert f["model.1.cv.conv.weight"] == "hyperace"  # a Conv inside HyperACE: first rule wins
    assert f["model.2.cv.conv.weight"] == "fullpad"
    assert f["model.3.m.dw.weight"] == "dsc"
    assert f["model.3.cv2.conv.weight"] == "dsc"
    assert f["model.4.cv1.conv.weight"] == "attention"
    assert f["model.5.conv.weight"] == "conv"
    assert f["model.6.weight"] == "default"  # a Linear outside every family
    assert f["model.7.cv2.0.conv.weight"] == "head"
    assert f["model.7.cv2.1.dw.weight"] == "head"  # protected wins over dsc
    assert f["model.7.dfl.conv.weight"] == "fixed"


def test_detect_subclass_is_protected_and_dfl_is_never_prunable():
    a = assign_families(Net(head=Segment), load_rules("tokenc3_lsnet"))
    head = [w for w in a.weights if w.name.startswith("model.7.")]
    assert head and all(w.protected for w in head)
    assert all(not w.name.startswith("model.7.") for w in a.prunable)
    # DFL stays fixed even under rules that do not mention it
    rules = load_rules({"rules": [{"family": "all", "ratio": 0.5, "classes": ["*"]}]})
    dfl = [w for w in assign_families(Net(), rules).weights if "dfl" in w.name]
    assert dfl[0].family == "fixed" and dfl[0].protected


def test_names_are_never_matched():
    """A module called 'tokenc3' in its path but of class Conv is plain conv."""
    net = nn.Module()
    net.tokenc3_block = Conv()
    assert families(net) == {"tokenc3_block.conv.weight": "conv"}


def test_layer_indices_and_globs():
    rules = load_rules(
        {
            "rules": [
                {"family": "first", "ratio": 0.1, "classes": ["*"], "layers": [0]},
                {"family": "tok", "ratio": 0.2, "classes": ["Token*"]},
                {"family": "rest", "ratio": 0.3, "classes": ["*"]},
            ]
        }
    )
    f = {w.name: w.family for w in assign_families(Net(), rules).weights}
    assert f["model.0.cv1.conv.weight"] == "first"
    assert f["model.5.conv.weight"] == "rest"


def test_real_ultralytics_model_assignment():
    from ultralytics import YOLO

    a = assign_families(YOLO("yolo11n.yaml").model, load_rules("default"))
    by_family = {w.family for w in a.weights}
    assert {"head", "attention", "conv", "fixed"} <= by_family
    for w in a.weights:
        if w.chain[0] == "Detect":
            assert w.protected
        if "C2PSA" in w.chain:
            assert w.family == "attention"
    # yolo11n's only DWConv layers sit in the Detect head: the protected head family takes them
    in_head = [w for w in a.weights if "DWConv" in w.chain]
    assert in_head and all(w.family == "head" for w in in_head)
    assert "dwconv" in a.unmatched_rules


def test_dwconv_outside_the_head_is_its_own_family():
    from ultralytics.nn.modules import DWConv

    net = nn.Sequential(DWConv(8, 8, 3), nn.Sequential(Conv(8, 8)))
    f = {w.name: w.family for w in assign_families(net, load_rules("default")).weights}
    assert f == {"0.conv.weight": "dwconv", "1.0.conv.weight": "conv"}


def test_a_catch_all_that_matches_nothing_is_not_reported_unmatched():
    # a scanned rules file covers every conv by layer, so its catch-all 'default' rule matches no weight: not a warning
    net = nn.Sequential(Conv(), nn.Identity())
    rules = {"rules": [{"family": "convs", "ratio": 0.2, "classes": ["Conv"]},
                       {"family": "dwconv", "ratio": 0.1, "classes": ["DWConv"]},
                       {"family": "late", "ratio": 0.1, "classes": ["*"], "layers": [99]},
                       {"family": "default", "ratio": 0.1, "classes": ["*"]}]}
    a = assign_families(net, load_rules(rules))
    assert {w.family for w in a.weights} == {"convs"}
    assert a.unmatched_rules == ["dwconv", "late"]  # a catch-all limited to layers the model lacks is reported


def test_presets_ship_with_reference_ratios():
    assert {"default", "tokenc3_lsnet"} <= set(preset_names())
    assert load_rules("tokenc3_lsnet").ratios == {
        "head": 0.0, "tokenc3": 0.06, "hyperace": 0.04, "lsnet": 0.08, "fullpad": 0.10,
        "attention": 0.12, "dsc": 0.15, "conv": 0.22, "default": 0.12,
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("rules:\n  - family: a\n    ratio: 0.1\n    clases: [Conv]\n", "unknown key 'clases'"),
        ("rules:\n  - family: a\n    ratio: 1.5\n    classes: [Conv]\n", "ratio=1.5 is outside [0, 1)"),
        ("rules:\n  - family: a\n    ratio: lots\n    classes: [Conv]\n", "ratio='lots' must be a number"),
        ("rules:\n  - family: a\n    ratio: -0.1\n    classes: [Conv]\n", "outside [0, 1)"),
        ("rules: [unclosed\n", "does not parse"),
        ("rulez: []\n", "expected a mapping with a 'rules' list"),
        ("rules:\n  - family: h\n    ratio: 0.1\n    protect: true\n    classes: [Detect]\n", "protected family must have ratio 0"),
    ],
)
def test_bad_rules_files_name_file_key_and_value(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        load_rules(path)
    assert message in str(info.value)
    if "does not parse" not in message:
        assert str(path) in str(info.value)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        load_rules("no_such_preset")


def test_an_edited_rules_file_is_read_again(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("rules:\n  - family: conv\n    ratio: 0.1\n    classes: [Conv]\n")
    assert load_rules(path).ratios == {"conv": 0.1}
    path.write_text("rules:\n  - family: conv\n    ratio: 0.25\n    classes: [Conv]\n")  # a different size
    assert load_rules(path).ratios == {"conv": 0.25}
    path.write_text("rules: [unclosed\n")
    with pytest.raises(ValueError, match="does not parse"):
        load_rules(path)
