"""Help output every `squeeze` command shares: each option's help ends with its default.

The root parser is a `SqueezeArgumentParser`; argparse builds every sub-parser (`squeeze seg predict`, ...) with
the class of the parser it hangs from, so the whole tree formats its help the same way without each package
passing a formatter. Standard library only: building a parser must stay instant (no torch, numpy).
"""

from __future__ import annotations

import argparse
import os
from typing import Any


def default_text(default: Any) -> str | None:
    """How a default reads on the command line ('1248 384' for a tuple, 'outputs/demo' for a path); None when
    there is nothing worth showing (no default, or an empty list of repeatable values)."""
    if default is None or default is argparse.SUPPRESS:
        return None
    if isinstance(default, list | tuple):
        return " ".join(str(v) for v in default) if default else None
    if isinstance(default, os.PathLike):
        return os.fspath(default)
    return str(default)


def shows_default(action: argparse.Action) -> bool:
    """Whether an option's help should state its default: options that take a value and have a default worth
    showing. Flags (store_true, help) are left out: their default is their absence."""
    return bool(action.option_strings) and action.nargs != 0 and default_text(action.default) is not None


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Append "(default: X)" to an option's help unless the help already says its default in words
    ("default: the checkpoint's"); like argparse.ArgumentDefaultsHelpFormatter, without stating flags' False and
    with tuples written as they are typed."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if not shows_default(action) or "default" in help_text.lower():
            return help_text
        text = default_text(action.default).replace("%", "%%")  # argparse %-formats the help string
        return f"{help_text} (default: {text})" if help_text else f"(default: {text})"


class SqueezeArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose help states every option's default (DefaultsHelpFormatter); its sub-parsers are
    of this class too."""

    def __init__(self, *args: Any, formatter_class: type[argparse.HelpFormatter] = DefaultsHelpFormatter,
                 **kwargs: Any) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def int_at_least(minimum: int):
    """An argparse type: an integer >= minimum, with a message naming the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse
