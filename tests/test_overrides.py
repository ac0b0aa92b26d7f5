"""Typed `--set FIELD=VALUE` overrides: values read as the config dataclass's field types, `--set help`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from squeeze.config import build_named, coerce, config_help, field_comments, type_name, typed_overrides
from squeeze.train_cli import parse_overrides
from squeezedet.model import squeezedet_kitti
from squeezedet.models import MODELS as DET_MODELS
from squeezeseg.models import MODELS as SEG_MODELS
from squeezeseg.squeezeseg import squeezeseg_kitti
from squeezeseg.squeezeseg_v2 import squeezeseg_v2_kitti


@dataclass(frozen=True)
class Toy:
    steps: int = 3  # how many steps
    rate: float = 0.5  # a rate
    on: bool = False  # a switch
    # the mode, documented on the lines above
    # over two lines
    mode: Literal["fast", "slow"] = "fast"
    scale: float | None = None  # None = automatic
    sizes: tuple[int, ...] = (1, 2)  # any number of sizes
    pair: tuple[int, int] = (3, 4)
    shapes: tuple[tuple[float, float], ...] = ((1.0, 2.0),)  # (w, h) pairs
    name: str = "toy"  # a name


@pytest.mark.parametrize("word, value", [("true", True), ("Yes", True), ("ON", True), ("1", True),
                                         ("false", False), ("no", False), ("Off", False), ("0", False)])
def test_bool_words(word, value):
    assert typed_overrides(Toy, [f"on={word}"]) == {"on": value}


@pytest.mark.parametrize("word", ["maybe", "t", "y", "2", "", "none"])
def test_bool_refuses_anything_else_naming_field_value_and_type(word):
    with pytest.raises(ValueError) as e:
        typed_overrides(Toy, [f"on={word}"])
    assert str(e.value) == f"Toy.on: cannot read {word!r} as bool (use true/false, yes/no, on/off or 1/0)"


def test_scalars_literal_optional_and_tuples():
    got = typed_overrides(Toy, ["steps=12", "rate=1e-3", "mode=slow", "scale=2", "sizes=[5, 6, 7]", "pair=8,9",
                                "shapes=[[10, 20.5], [30, 40]]", "name=other"])
    assert got == {"steps": 12, "rate": 0.001, "mode": "slow", "scale": 2.0, "sizes": (5, 6, 7), "pair": (8, 9),
                   "shapes": ((10.0, 20.5), (30.0, 40.0)), "name": "other"}
    assert type(got["scale"]) is float and type(got["shapes"][0][0]) is float
    assert typed_overrides(Toy, ["scale=none"]) == {"scale": None}
    assert typed_overrides(Toy, ["scale=NULL"]) == {"scale": None}
    assert typed_overrides(Toy, ["steps=1", "steps=4"]) == {"steps": 4}  # the last one wins
    # the form `--set help` prints the defaults in reads back
    assert typed_overrides(Toy, ["shapes=((1.5, 2), (3, 4))", "pair=(5, 6)", "sizes=(7,)"]) == {
        "shapes": ((1.5, 2.0), (3.0, 4.0)), "pair": (5, 6), "sizes": (7,)}
    with pytest.raises(ValueError, match="not a list like"):  # literals only: no code runs
        typed_overrides(Toy, ["sizes=(__import__('os').getpid(),)"])


@pytest.mark.parametrize("item, message", [
    ("steps=three", "Toy.steps: cannot read 'three' as int"),
    ("steps=3.5", "Toy.steps: cannot read '3.5' as int"),
    ("rate=fast", "Toy.rate: cannot read 'fast' as float"),
    ("mode=medium", "Toy.mode: 'medium' is not one of 'fast', 'slow'"),
    ("scale=big", "Toy.scale: cannot read 'big' as float | None"),
    ("pair=[1]", "Toy.pair: cannot read '[1]' as tuple[int, int]: 1 values, expected 2"),
    ("sizes=1,x", "Toy.sizes: cannot read '1,x' as tuple[int, ...]: cannot read 'x' as int"),
    ("sizes=[1,", "Toy.sizes: cannot read '[1,' as tuple[int, ...]: not a list like [1, 2] or (1, 2)"),
    ("sizes=(5)", "Toy.sizes: cannot read '(5)' as tuple[int, ...]: expected a list"),
    ("sizes=[true]", "Toy.sizes: cannot read '[true]' as tuple[int, ...]: cannot read True as int"),
    ("steps", "expected FIELD=VALUE, got 'steps'"),
    ("=3", "expected FIELD=VALUE, got '=3'"),
])
def test_bad_values(item, message):
    with pytest.raises(ValueError) as e:
        typed_overrides(Toy, [item])
    assert str(e.value) == message


def test_unknown_fields_are_all_listed_with_a_close_match():
    with pytest.raises(ValueError) as e:
        typed_overrides(Toy, ["step=3", "colour=red", "rate=1"])
    assert str(e.value) == "Toy has no field(s) 'step' (did you mean 'steps'?), 'colour'"


def test_coerce_and_type_names():
    assert coerce("  7 ", int) == 7
    assert coerce(3, float) == 3.0
    with pytest.raises(ValueError):
        coerce(True, int)  # a bool is an int to Python, not to the CLI
    with pytest.raises(ValueError):
        coerce(2.5, int)  # int(2.5) would truncate silently
    assert type_name(float | None) == "float | None"
    assert type_name(tuple[tuple[float, float], ...]) == "tuple[tuple[float, float], ...]"
    assert type_name(Literal["a", "b"]) == "Literal['a', 'b']"


def test_field_comments_from_the_source():
    comments = field_comments(Toy)
    assert comments["steps"] == "how many steps"
    assert comments["mode"] == "the mode, documented on the lines above over two lines"
    assert comments["pair"] == ""  # no comment beside or above it
    assert comments["scale"] == "None = automatic"
    seg = field_comments(type(squeezeseg_v2_kitti()))
    assert seg["use_crf"] == "the released V2 code keeps SqueezeSeg's recurrent CRF"
    assert seg["crf_mode"].startswith('"textbook" (CRF-as-RNN, logits minus messages) is the default because it')
    assert seg["crf_mode"].endswith("bench/bench_seg_learning.py.")
    det = field_comments(type(squeezedet_kitti()))
    assert det["batch_norm"].startswith("Training aid, not in the reference: BatchNorm between every trunk conv")


def test_config_help_lists_every_field_with_type_default_and_comment():
    text = config_help(squeezeseg_kitti())
    lines = text.splitlines()
    assert lines[0].startswith("SqueezeSegConfig fields, as --set FIELD=VALUE")
    fields = [ln.strip().split(":")[0] for ln in lines[2:] if ln.startswith("  ") and not ln.startswith("    ")]
    assert fields == [f for f in type(squeezeseg_kitti()).__dataclass_fields__]
    i = lines.index("  crf_iterations: int = 3")
    assert lines[i + 1] == "      mean-field iterations (RCRF_ITER)"
    assert "  fire_init_std: float | None = None" in lines
    assert "  use_crf: bool = True" in lines
    # the named config's own defaults: the 360-degree variant is 2048 wide
    assert "  width: int = 2048" in config_help(SEG_MODELS["squeezeseg_kitti_360"][0]()).splitlines()


def test_overrides_reach_the_built_model():
    """The defect: `--set use_crf=no` and `batch_norm=off` were truthy strings, so the feature stayed on."""
    base = SEG_MODELS["squeezeseg_kitti"][0]()
    model, cfg = build_named(SEG_MODELS, "squeezeseg_kitti", **parse_overrides(["use_crf=no", "crf_iterations=2"],
                                                                                base))
    assert cfg.use_crf is False and cfg.crf_iterations == 2
    assert not any(name.startswith("crf") for name, _ in model.named_children())
    det_base = DET_MODELS["squeezedet_kitti"][0]()
    _, det_cfg = build_named(DET_MODELS, "squeezedet_kitti", **parse_overrides(["batch_norm=off"], det_base))
    assert det_cfg.batch_norm is False
    with pytest.raises(ValueError, match=r"SqueezeDetConfig.batch_norm: cannot read 'maybe' as bool"):
        parse_overrides(["batch_norm=maybe"], det_base)
    with pytest.raises(ValueError, match=r"SqueezeSegConfig.crf_iterations: cannot read 'three' as int"):
        parse_overrides(["crf_iterations=three"], base)


def test_parse_overrides_help_prints_the_fields_and_exits_0(capsys):
    with pytest.raises(SystemExit) as e:
        parse_overrides(["use_crf=off", "help"], squeezeseg_v2_kitti())
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out == config_help(squeezeseg_v2_kitti()) + "\n"
    assert "  append_mask: bool = True\n      append the LiDAR mask as one more input channel" in out


def test_check_batch_size_names_the_folder_and_the_flag(tmp_path):
    from squeeze.errors import DataError
    from squeeze.train_cli import check_batch_size

    check_batch_size(8, 8, tmp_path)  # one full batch is enough
    with pytest.raises(DataError) as e:
        check_batch_size(3, 8, tmp_path / "sim")
    assert str(e.value) == f"{tmp_path / 'sim'}: 3 frames < --batch-size 8; pass --batch-size 3 or fewer"
    with pytest.raises(DataError, match="no training frames"):
        check_batch_size(0, 1, tmp_path)
    with pytest.raises(ValueError, match="--batch-size must be >= 1, got 0"):
        check_batch_size(5, 0, tmp_path)
