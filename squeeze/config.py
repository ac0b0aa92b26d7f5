"""Named model configs: build a model and its frozen config from a package's table of named variants.

Library code (predictors, training recipes) builds models through `build_named`; it lives here rather than in
the CLI helpers so that no library module imports `squeeze.train_cli`. `typed_overrides` reads `--set FIELD=VALUE`
strings as the config's field types, and `config_help` lists the fields with their defaults and comments.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import io
import json
import sys
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def named_config(models: Mapping[str, tuple[Callable[[], Any], type]], name: str, **overrides: Any) -> Any:
    """The config of a named model from a package's MODELS table {name: (config factory, model class)}, fields
    overridden; no model is built (so no weights are drawn from the random state).

    Raises ValueError naming the model when `name` is not in the table, and naming the fields when an override
    is not a field of the config.
    """
    if name not in models:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(models)}")
    base = models[name][0]()
    unknown = set(overrides) - {f.name for f in dataclasses.fields(base)}
    if unknown:
        raise ValueError(f"{type(base).__name__} has no field(s) {', '.join(sorted(unknown))}")
    return dataclasses.replace(base, **overrides)


def build_named(models: Mapping[str, tuple[Callable[[], Any], type]], name: str, **overrides: Any) -> tuple[Any, Any]:
    """(model, config) from a package's MODELS table, fields overridden (see named_config for the errors)."""
    config = named_config(models, name, **overrides)
    return models[name][1](config), config


# ------------------------------------------------------------------------------------------------- typed overrides
# Hand-written rather than pydantic's TypeAdapter (installed here only as a dependency of open3d's dash): its lax
# mode reads "t", "y" and "n" as bools and True as the int 1, which the CLI must refuse, and its strict mode refuses
# "no" for a bool and a JSON list for a tuple, so either way a pre-pass and a rewrite of its multi-line errors would
# remain; the field types of these configs (scalars, Literal, tuples, X | None) take about 40 lines.
BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
NONE_WORDS = ("none", "null")


def type_name(tp: Any) -> str:
    """'int', 'tuple[float, ...]', 'float | None', "Literal['a', 'b']" for messages and `--set help`."""
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    return str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any) -> Any:
    """`value` (a command-line string, or a value decoded from a JSON list) as type `tp`; ValueError when it is not.

    bool takes true/false, yes/no, on/off, 1/0 (any case); int refuses fractions and bools; tuples take a JSON list
    `[1, 2]` or `1,2` (nested tuples only JSON); `X | None` takes none/null; Literal takes one of its values.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    text = value.strip() if isinstance(value, str) else value
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (text is None or (isinstance(text, str) and text.lower() in NONE_WORDS)):
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(text, arg)
            except ValueError:
                continue
        raise ValueError(f"cannot read {value!r} as {type_name(tp)}")
    if origin is typing.Literal:
        for choice in args:
            try:
                if coerce(text, type(choice)) == choice:
                    return choice
            except ValueError:
                continue
        raise ValueError(f"{value!r} is not one of {', '.join(map(repr, args))}")
    if origin is tuple:
        if isinstance(text, str):
            text = _list_of(text, value, tp)
        if not isinstance(text, list | tuple):
            raise ValueError(f"cannot read {value!r} as {type_name(tp)}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(text)
        elif len(text) != len(args):
            raise ValueError(f"cannot read {value!r} as {type_name(tp)}: {len(text)} values, expected {len(args)}")
        try:
            return tuple(coerce(v, a) for v, a in zip(text, args, strict=True))
        except ValueError as e:
            raise ValueError(f"cannot read {value!r} as {type_name(tp)}: {e}") from None
    if tp is bool:
        if isinstance(text, bool):
            return text
        word = str(text).lower()
        if word not in BOOL_WORDS:
            raise ValueError(f"cannot read {value!r} as bool (use true/false, yes/no, on/off or 1/0)")
        return BOOL_WORDS[word]
    if tp in (int, float):
        # A bool is an int to Python, and int(3.7) would truncate: both are refused rather than converted.
        if isinstance(text, bool) or not isinstance(text, str | int | float) or (tp is int and isinstance(text, float)):
            raise ValueError(f"cannot read {value!r} as {tp.__name__}")
        try:
            return tp(text)
        except ValueError:
            raise ValueError(f"cannot read {value!r} as {tp.__name__}") from None
    backbone = sys.modules.get("squeeze.backbone")  # loaded whenever a config with a backbone field is
    if backbone is not None and tp is backbone.Backbone:
        # A trunk is a whole architecture: it comes from a spec file (squeeze.backbone; DNAS writes one).
        if not isinstance(text, str) or not text.endswith(".json"):
            raise ValueError(f"cannot read {value!r} as a backbone: give a spec file, e.g. backbone=trunk.json")
        return backbone.read_backbone(text)
    if tp is str:
        if not isinstance(text, str):
            raise ValueError(f"cannot read {value!r} as str")
        return text
    raise TypeError(f"no reader for fields of type {type_name(tp)}")


def _list_of(text: str, value: Any, tp: Any) -> list[Any]:
    """The items of a tuple value: a JSON list `[1, 2]`, the Python form `(1, 2)` that `--set help` prints (read
    with ast.literal_eval, which evaluates literals only), or bare `1,2`."""
    if not text.startswith(("[", "(")):
        return [t for t in text.split(",") if t.strip()]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        items = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(f"cannot read {value!r} as {type_name(tp)}: not a list like [1, 2] or (1, 2)") from None
    return list(items) if isinstance(items, list | tuple) else items


def typed_overrides(config: Any, items: Sequence[str]) -> dict[str, Any]:
    """["use_crf=off", "class_weights=[1,1,5,5]"] -> {"use_crf": False, "class_weights": (1.0, 1.0, 5.0, 5.0)}.

    `config` is the config dataclass (or an instance). Each value is read as its field's annotated type
    (`coerce`). ValueError naming the field, the value and the expected type; unknown fields are all listed, each
    with the closest field name when there is one. A field given twice takes its last value.
    """
    cls = config if isinstance(config, type) else type(config)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"expected FIELD=VALUE, got {item!r}")
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            unknown.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            continue
        try:
            out[key] = coerce(value, hints[key])
        except ValueError as e:
            raise ValueError(f"{cls.__name__}.{key}: {e}") from None
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    return out


def field_comments(cls: type) -> dict[str, str]:
    """{field: the comment documenting its default}: the comment ending the field's line, else the comment lines
    just above it joined into one line; "" when there is neither or the source is not available."""
    comments: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        trailing: dict[int, str] = {}  # line -> comment after code on it
        alone: dict[int, str] = {}  # line -> comment that is the whole line
        code_lines: set[int] = set()
        skip = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                text = tok.string.lstrip("#").strip()
                (trailing if tok.start[0] in code_lines else alone)[tok.start[0]] = text
            elif tok.type not in skip:
                code_lines.update(range(tok.start[0], tok.end[0] + 1))
        body = ast.parse(source).body[0]
        for node in getattr(body, "body", []):
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            own = [trailing[n] for n in range(node.lineno, (node.end_lineno or node.lineno) + 1) if n in trailing]
            above, n = [], node.lineno - 1
            while n in alone:
                above.insert(0, alone[n])
                n -= 1
            comments[node.target.id] = " ".join(own or above)
    return comments


def config_help(config: Any) -> str:
    """Every field of a config instance: name, type, its value here (the default of that named config) and the
    comment documenting it, as `--set help` prints them."""
    cls = type(config)
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    lines = [f"{cls.__name__} fields, as --set FIELD=VALUE (bools: true/false, yes/no, on/off, 1/0; tuples: [1, 2]",
             "or 1,2; none for an optional value):"]
    for f in dataclasses.fields(cls):
        lines.append(f"  {f.name}: {type_name(hints[f.name])} = {getattr(config, f.name)!r}")
        if comments.get(f.name):
            lines += textwrap.wrap(comments[f.name], 116, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)
