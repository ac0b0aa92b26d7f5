"""Backbones as data: a Fire trunk (SqueezeDet, SqueezeDet+, SqueezeSeg, SqueezeSegV2, or a searched one) is a
`Backbone`, a name and a list of `Stage`s, which one shared builder turns into modules.

A stage is one op on the output of the stage before it (the "main path"):
- "conv": a convolution with bias, kernel `kernel` x `kernel`, `channels` = (out,), then ReLU [and BN];
- "maxpool": a `kernel` x `kernel` max-pool, `channels` = ();
- "fire": a Fire block (squeeze.fire.Fire), `channels` = (squeeze, expand1x1, expand3x3), stride (1, 1);
- "cam": SqueezeSegV2's context aggregation gate (squeeze.fire.ContextAggregation), `channels` = (), stride (1, 1).
Per stage: `stride` (rows, cols): SqueezeSeg strides (1, 2), the width only; `padding` "same" (TensorFlow's, the
odd pixel after) or "valid" (SqueezeDet+'s conv1 and pools); `bn`: BatchNorm in the conv / Fire (the model's
BatchNormSpec says where: after the ReLU for SqueezeSegV2); `from_input`: the stage reads the trunk's input instead
of the main path and only feeds a skip (SqueezeSeg's conv1_skip); `skip`: a decoder takes this stage's output.
Stage names are the module names, so they fix the state_dict keys, and decoders refer to stages by name.
Dropout, decoders and heads are the models' own, not part of the trunk.

JSON (what DNAS writes and `--backbone spec.json` reads), one stage a line, every field written::

    {
      "format": "squeeze-backbone",
      "version": 1,
      "name": "squeezedet",
      "stages": [
        {"op": "conv", "name": "conv1", "channels": [64], "kernel": 3, "stride": [2, 2], "padding": "same", ...},
        ...
      ]
    }

When reading, "op" and "name" are required, and per op: conv "channels", "kernel", "stride"; maxpool "kernel",
"stride"; fire "channels". Other fields default as in `Stage`; a stride may be one int for both axes.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from squeeze.atomic import atomic_write_text
from squeeze.errors import DataError
from squeeze.fire import BatchNormSpec, ContextAggregation, ConvReLU, Fire, SameMaxPool2d

__all__ = [
    "FORMAT",
    "OPS",
    "PADDINGS",
    "Backbone",
    "Init",
    "SpecError",
    "Stage",
    "Trunk",
    "backbone_from_dict",
    "backbone_from_json",
    "backbone_to_dict",
    "backbone_to_json",
    "build_trunk",
    "input_stages",
    "read_backbone",
    "run_trunk",
    "stage_shapes",
    "trunk_output",
    "with_batch_norm",
    "write_backbone",
]

FORMAT = "squeeze-backbone"
VERSION = 1
OPS = ("conv", "maxpool", "fire", "cam")
PADDINGS = ("same", "valid")
# How many `channels` each op takes, and what they mean (for messages).
_WIDTHS = {"conv": (1, "(out,)"), "maxpool": (0, "()"), "fire": (3, "(squeeze, expand1x1, expand3x3)"),
           "cam": (0, "()")}
# Fields a JSON stage must give, besides "op" and "name"; the rest take the Stage defaults.
_REQUIRED = {"conv": ("channels", "kernel", "stride"), "maxpool": ("kernel", "stride"), "fire": ("channels",),
             "cam": ()}
_STAGE_FIELDS = ("op", "name", "channels", "kernel", "stride", "padding", "bn", "from_input", "skip")

# Initialisation of one stage's convs, chosen by the model: a truncated-normal std, None = He-normal, or "xavier".
Init = float | str | None


class SpecError(ValueError):
    """A bad backbone spec: `field` is where ("stages[3].channels", "stages"), `problem` what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"{field}: {problem}")


@dataclass(frozen=True)
class Stage:
    """One trunk stage; see the module docstring for the ops."""

    op: str  # one of OPS
    name: str  # module name (a Python identifier): state_dict keys and decoder skips refer to it
    channels: tuple[int, ...] = ()  # conv (out,); fire (squeeze, expand1x1, expand3x3); maxpool, cam ()
    kernel: int = 1  # conv / maxpool window side; fire and cam have fixed kernels
    stride: tuple[int, int] = (1, 1)  # (rows, cols); fire and cam only (1, 1)
    padding: str = "same"  # "same": TF 'SAME' (odd pixel after); "valid": no padding
    bn: bool = False  # BatchNorm in this conv / Fire (where: the model's BatchNormSpec)
    from_input: bool = False  # reads the trunk input, not the main path; only feeds a skip (conv only)
    skip: bool = False  # a decoder takes this stage's output

    def __post_init__(self) -> None:
        where = f"stage {self.name!r}" if isinstance(self.name, str) else "stage"
        _check_stage(self, where)


@dataclass(frozen=True)
class Backbone:
    """A trunk: `stages` run in order (see the module docstring). Frozen and hashable, so a config can hold it."""

    name: str  # "squeezedet", "squeezeseg", ..., or whatever a search called it
    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SpecError("name", f"must be a non-empty string, got {self.name!r}")
        if not isinstance(self.stages, tuple) or not all(isinstance(s, Stage) for s in self.stages):
            raise SpecError("stages", "must be a tuple of Stage")
        seen: dict[str, int] = {}
        for i, stage in enumerate(self.stages):
            if stage.name in seen:
                raise SpecError(f"stages[{i}].name", f"{stage.name!r} is also the name of stages[{seen[stage.name]}]")
            seen[stage.name] = i
        if not any(not s.from_input for s in self.stages):
            raise SpecError("stages", "needs at least one stage on the main path (not from_input)")

    def __repr__(self) -> str:  # one line for `--set help` and logs; backbone_to_json has every field
        return f"Backbone(name={self.name!r}, stages=<{len(self.stages)}: {' '.join(s.name for s in self.stages)}>)"


def _check_stage(s: Stage, where: str) -> None:
    """Raise SpecError naming `where`.field unless every field of `s` has the right type and a usable value."""
    def fail(field: str, problem: str) -> None:
        raise SpecError(f"{where}.{field}", problem)

    if not isinstance(s.op, str) or s.op not in OPS:
        fail("op", f"unknown op {s.op!r}; one of {', '.join(OPS)}")
    if not isinstance(s.name, str) or not s.name.isidentifier():
        fail("name", f"must be a Python identifier (it names a module), got {s.name!r}")
    n, meaning = _WIDTHS[s.op]
    if not isinstance(s.channels, tuple) or not all(_is_int(c) for c in s.channels):
        fail("channels", f"must be a list of ints, got {s.channels!r}")
    if len(s.channels) != n or any(c <= 0 for c in s.channels):
        fail("channels", f"a {s.op} takes {n} positive widths {meaning}, got {list(s.channels)}")
    if not _is_int(s.kernel) or s.kernel <= 0:
        fail("kernel", f"must be a positive int, got {s.kernel!r}")
    if not isinstance(s.stride, tuple) or len(s.stride) != 2 or not all(_is_int(v) and v > 0 for v in s.stride):
        fail("stride", f"must be 2 positive ints (rows, cols), got {s.stride!r}")
    if s.op in ("fire", "cam") and s.stride != (1, 1):
        fail("stride", f"a {s.op} keeps the size: stride must be (1, 1), got {s.stride}")
    if s.padding not in PADDINGS:
        fail("padding", f"must be one of {', '.join(PADDINGS)}, got {s.padding!r}")
    for flag in ("bn", "from_input", "skip"):
        if not isinstance(getattr(s, flag), bool):
            fail(flag, f"must be true or false, got {getattr(s, flag)!r}")
    if s.bn and s.op not in ("conv", "fire"):
        fail("bn", f"only a conv or a fire has BatchNorm, this is a {s.op}")
    if s.from_input and (s.op != "conv" or not s.skip):
        fail("from_input", "only a conv with skip true may read the trunk input (it feeds nothing else)")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# ------------------------------------------------------------------------------------------------------ JSON
def backbone_to_dict(backbone: Backbone) -> dict[str, Any]:
    """The JSON document of `backbone` as plain dicts and lists (every stage field written)."""
    stages = [{"op": s.op, "name": s.name, "channels": list(s.channels), "kernel": s.kernel, "stride": list(s.stride),
               "padding": s.padding, "bn": s.bn, "from_input": s.from_input, "skip": s.skip} for s in backbone.stages]
    return {"format": FORMAT, "version": VERSION, "name": backbone.name, "stages": stages}


def backbone_to_json(backbone: Backbone) -> str:
    """The JSON text of `backbone`: one stage a line, ending in a newline; `backbone_from_json` reads it back equal,
    and writing that again gives the same bytes."""
    doc = backbone_to_dict(backbone)
    stages = ",\n".join(f"    {json.dumps(s)}" for s in doc["stages"])
    head = ",\n".join(f"  {json.dumps(k)}: {json.dumps(doc[k])}" for k in ("format", "version", "name"))
    return f"{{\n{head},\n  \"stages\": [\n{stages}\n  ]\n}}\n"


def backbone_from_dict(doc: Mapping[str, Any]) -> Backbone:
    """A Backbone from its JSON document, or from `dataclasses.asdict(backbone)` (as a checkpoint's config holds it:
    no "format"/"version", tuples or lists). SpecError naming the field ("stages[3].channels") when it is bad."""
    if not isinstance(doc, Mapping):
        raise SpecError("backbone", f"expected an object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - {"format", "version", "name", "stages"})
    if unknown:
        raise SpecError("backbone", f"unknown field(s) {', '.join(map(repr, unknown))}")
    if "format" in doc and doc["format"] != FORMAT:
        raise SpecError("format", f"expected {FORMAT!r}, got {doc['format']!r}")
    if "version" in doc and doc["version"] != VERSION:
        raise SpecError("version", f"this reader knows version {VERSION}, got {doc['version']!r}")
    for key in ("name", "stages"):
        if key not in doc:
            raise SpecError(key, "missing")
    raw_stages = doc["stages"]
    if not isinstance(raw_stages, list | tuple) or not raw_stages:
        raise SpecError("stages", f"must be a non-empty list of stages, got {raw_stages!r}")
    stages = tuple(_stage_from_dict(s, f"stages[{i}]") for i, s in enumerate(raw_stages))
    return Backbone(name=doc["name"], stages=stages)


def _stage_from_dict(raw: Any, where: str) -> Stage:
    if not isinstance(raw, Mapping):
        raise SpecError(where, f"expected an object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_STAGE_FIELDS))
    if unknown:
        raise SpecError(where, f"unknown field(s) {', '.join(map(repr, unknown))}; a stage has "
                               f"{', '.join(_STAGE_FIELDS)}")
    for key in ("op", "name"):
        if key not in raw:
            raise SpecError(f"{where}.{key}", "missing")
    op = raw["op"]
    if not isinstance(op, str) or op not in OPS:
        raise SpecError(f"{where}.op", f"unknown op {op!r}; one of {', '.join(OPS)}")
    missing = [k for k in _REQUIRED[op] if k not in raw]
    if missing:
        raise SpecError(f"{where}.{missing[0]}", f"missing (a {op} needs {', '.join(_REQUIRED[op])})")
    values = dict(raw)
    for key in ("channels", "stride"):
        if key in values:
            value = values[key]
            if key == "stride" and _is_int(value):
                value = [value, value]
            if not isinstance(value, list | tuple):
                raise SpecError(f"{where}.{key}", f"must be a list of ints, got {value!r}")
            values[key] = tuple(value)
    try:
        return Stage(**values)
    except SpecError as e:  # re-address "stage 'fire2'.channels" as "stages[3].channels"
        raise SpecError(f"{where}.{e.field.rsplit('.', 1)[-1]}", e.problem) from None


def backbone_from_json(text: str) -> Backbone:
    """A Backbone from JSON text; SpecError naming the field when the text or the spec is bad."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError("json", f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    return backbone_from_dict(doc)


def read_backbone(path: str | Path) -> Backbone:
    """A Backbone from a JSON file (`--backbone spec.json`); DataError naming the file and the field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"cannot read the backbone spec: {getattr(e, 'strerror', None) or e}") from None
    try:
        return backbone_from_json(text)
    except SpecError as e:
        raise DataError(path, str(e)) from None


def write_backbone(path: str | Path, backbone: Backbone) -> Path:
    """Write `backbone_to_json(backbone)` to `path` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    atomic_write_text(path, backbone_to_json(backbone))
    return path


# ------------------------------------------------------------------------------------------------ shapes
def stage_shapes(backbone: Backbone, in_channels: int, height: int, width: int) -> dict[str, tuple[int, int, int]]:
    """{stage name: (channels, height, width) of its output} for a (in_channels, height, width) input.

    'same' gives ceil(n / stride); 'valid' (n - kernel) // stride + 1, or 0 when the window does not fit.
    """
    def size(n: int, k: int, s: int, padding: str) -> int:
        if padding == "same":
            return -(-n // s)
        return (n - k) // s + 1 if n >= k else 0

    shapes: dict[str, tuple[int, int, int]] = {}
    main = (in_channels, height, width)
    for s in backbone.stages:
        c, h, w = (in_channels, height, width) if s.from_input else main
        if s.op == "conv":
            c = s.channels[0]
        elif s.op == "fire":
            c = s.channels[1] + s.channels[2]
        if s.op in ("conv", "maxpool"):
            h, w = size(h, s.kernel, s.stride[0], s.padding), size(w, s.kernel, s.stride[1], s.padding)
        shapes[s.name] = (c, h, w)
        if not s.from_input:
            main = (c, h, w)
    return shapes


def trunk_output(backbone: Backbone, in_channels: int, height: int, width: int) -> tuple[int, int, int]:
    """(channels, height, width) of the trunk's output: the last main-path stage's."""
    last = [s.name for s in backbone.stages if not s.from_input][-1]
    return stage_shapes(backbone, in_channels, height, width)[last]


def input_stages(backbone: Backbone) -> tuple[str, ...]:
    """Names of the stages that read the trunk input: the first main-path stage and every from_input stage."""
    first = next(s.name for s in backbone.stages if not s.from_input)
    return tuple(s.name for s in backbone.stages if s.from_input or s.name == first)


def with_batch_norm(backbone: Backbone, on: bool = True) -> Backbone:
    """`backbone` with `bn` set to `on` in every conv and fire stage (SqueezeDet's BatchNorm training aid)."""
    stages = tuple(replace(s, bn=on) if s.op in ("conv", "fire") else s for s in backbone.stages)
    return replace(backbone, stages=stages)


# ------------------------------------------------------------------------------------------------ modules
def build_trunk(backbone: Backbone, in_channels: int, *, bn: BatchNormSpec | None = None,
                init: Callable[[Stage], Init] = lambda stage: None,
                cam_reduction: int = 16) -> OrderedDict[str, nn.Module]:
    """{stage name: module}, in order, for a (B, in_channels, H, W) input; modules are created (and draw their
    random init) in stage order.

    bn: the BatchNorm settings of stages with `bn` (required when any has it). init(stage): that stage's conv init,
    a truncated-normal std, None for He-normal, or "xavier" (conv stages only). cam_reduction: C -> C / r -> C.
    Raises SpecError naming the stage when a width does not fit (a CAM narrower than its reduction).
    """
    if bn is None and any(s.bn for s in backbone.stages):
        raise ValueError(f"backbone {backbone.name!r} has BatchNorm stages: give the BatchNormSpec")
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    main = in_channels
    for i, s in enumerate(backbone.stages):
        c = in_channels if s.from_input else main
        std = init(s)
        stage_bn = bn if s.bn else None
        if s.op == "conv":
            xavier = std == "xavier"
            module: nn.Module = ConvReLU(c, s.channels[0], s.kernel, s.stride, bn=stage_bn,
                                         init_std=None if xavier else std, xavier=xavier, padding=s.padding)
            out = s.channels[0]
        elif s.op == "fire":
            if isinstance(std, str):
                raise ValueError(f"stage {s.name!r}: a fire takes a float std or None as init, got {std!r}")
            module = Fire(c, *s.channels, bn=stage_bn, init_std=std)
            out = module.out_channels
        elif s.op == "maxpool":
            module = SameMaxPool2d(s.kernel, s.stride) if s.padding == "same" else nn.MaxPool2d(s.kernel, s.stride)
            out = c
        else:  # cam
            if c // cam_reduction < 1:
                raise SpecError(f"stages[{i}]", f"a CAM on {c} channels with reduction {cam_reduction} has no "
                                                "bottleneck channel; put it after a wider stage")
            module = ContextAggregation(c, cam_reduction)
            out = c
        modules[s.name] = module
        if not s.from_input:
            main = out
    return modules


def run_trunk(stages: nn.Module, backbone: Backbone, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Run `backbone`'s stages, held as submodules of `stages` under their names, on `x` (B, C, H, W).

    Returns the main path's output and {name: output} of the stages marked `skip`.
    """
    skips: dict[str, Tensor] = {}
    out = x
    for s in backbone.stages:
        module = getattr(stages, s.name)
        if s.from_input:
            y = module(x)
        else:
            y = out = module(out)
        if s.skip:
            skips[s.name] = y
    return out, skips


class Trunk(nn.Module):
    """A trunk's stage modules as children named after the stages; forward returns the main path's output.

    Input (B, in_channels, H, W) -> (B, out_channels, H', W') with H', W' from `stage_shapes`.
    """

    def __init__(self, backbone: Backbone, in_channels: int, *, bn: BatchNormSpec | None = None,
                 init: Callable[[Stage], Init] = lambda stage: None, cam_reduction: int = 16) -> None:
        super().__init__()
        self.backbone = backbone
        for name, module in build_trunk(backbone, in_channels, bn=bn, init=init, cam_reduction=cam_reduction).items():
            self.add_module(name, module)
        self.out_channels = trunk_output(backbone, in_channels, 1, 1)[0]

    def forward(self, x: Tensor) -> Tensor:
        return run_trunk(self, self.backbone, x)[0]

