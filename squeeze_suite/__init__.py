"""The top package: the `squeeze` command root (`cli.py`) and `squeeze demo` (`demo.py`).

It is the only package that imports every other package of the suite; each package's commands live in that
package's own cli.py and are gathered here. Nothing heavy is imported until a command runs.
"""
