"""Named model configs: build a model and its frozen config from a package's table of named variants.

Library code (predictors, training recipes) builds models through `build_named`; it lives here rather than in
the CLI helpers so that no library module imports `squeeze.train_cli`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any


def build_named(models: Mapping[str, tuple[Callable[[], Any], type]], name: str, **overrides: Any) -> tuple[Any, Any]:
    """(model, config) from a package's MODELS table {name: (config factory, model class)}, fields overridden.

    Raises ValueError naming the model when `name` is not in the table, and naming the fields when an override
    is not a field of the config.
    """
    if name not in models:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(models)}")
    make_config, model_cls = models[name]
    base = make_config()
    unknown = set(overrides) - {f.name for f in dataclasses.fields(base)}
    if unknown:
        raise ValueError(f"{type(base).__name__} has no field(s) {', '.join(sorted(unknown))}")
    config = dataclasses.replace(base, **overrides)
    return model_cls(config), config
