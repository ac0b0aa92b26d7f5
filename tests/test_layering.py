"""The dependency direction of ../shared/DESIGN.md, read from the source (ast; nothing is imported or run).

Every import counts, including those inside functions: a lazy import still ties one package to another.
Packages not yet in the tree are skipped; bench/ and tests/ are not checked.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODEL_PACKAGES = frozenset({"squeezedet", "squeezeseg"})
# The packages of the suite and the other suite packages each may import (DESIGN.md, "Dependency direction").
ALLOWED: dict[str, frozenset[str]] = {
    "squeeze": frozenset(),
    "squeezedet": frozenset({"squeeze"}),
    "squeezeseg": frozenset({"squeeze"}),
    "domain_adapt": frozenset({"squeeze", "squeezeseg"}),
    "dnas": frozenset({"squeeze"}) | MODEL_PACKAGES,
    "deploy": frozenset({"squeeze"}) | MODEL_PACKAGES,
    "latte": frozenset({"squeeze"}),
    "squeeze_suite": frozenset(),  # the top package: checked against nothing (it imports everything)
}
SUITE = frozenset(ALLOWED)
# Files with wider rights than their package: latte's command chooses a model package or a deploy runtime (through
# squeeze_suite.predictors, the one loader for both), and writes the simulated sequence it opens when no data folder
# is given.
FILE_ALLOWED: dict[str, frozenset[str]] = {
    "latte/cli.py": frozenset({"squeeze", "deploy", "domain_adapt", "squeeze_suite"}) | MODEL_PACKAGES,
}
# Only a package's commands and training recipes drive the trainer and its CLI options.
TRAINER_MODULES = frozenset({"squeeze.train", "squeeze.train_cli"})


@dataclass(frozen=True)
class Import:
    file: str  # path relative to the root, with forward slashes, e.g. "squeezedet/predict.py"
    line: int  # 1-based line of the import statement
    module: str  # the absolute module named, e.g. "squeeze" for `from squeeze import train`
    names: tuple[str, ...] = ()  # `from module import a, b`: ("module.a", "module.b"), as each may be a submodule


def module_name(rel: Path) -> str:
    """'squeezedet/model.py' -> 'squeezedet.model'; 'squeeze/__init__.py' -> 'squeeze'."""
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> list[Import]:
    """Every import in one file, at any depth (module level, functions, classes, `if TYPE_CHECKING`)."""
    rel = path.relative_to(root)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(rel).split(".") if rel.name == "__init__.py" else module_name(rel).split(".")[:-1]
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(rel.as_posix(), node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the file's own package
                base = package[: max(0, len(package) - node.level + 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = tuple(f"{module}.{a.name}" for a in node.names if a.name != "*")
            found.append(Import(rel.as_posix(), node.lineno, module, names))
    return sorted(found, key=lambda i: i.line)


def package_files(root: Path) -> dict[str, list[Path]]:
    """{package: its .py files} for each suite package present under root."""
    return {pkg: sorted((root / pkg).rglob("*.py")) for pkg in sorted(SUITE) if (root / pkg / "__init__.py").exists()}


def is_deploy_runtime(rel: str) -> bool:
    """deploy/runtime*.py and everything under deploy/runtimes/: the modules that run exported models."""
    parts = rel.split("/")
    return parts[0] == "deploy" and (parts[1] == "runtimes" or (len(parts) == 2 and parts[1].startswith("runtime")))


def trainer_user(rel: str) -> bool:
    """A package's cli.py or train.py, or squeeze/train_cli.py (the trainer's own CLI options)."""
    return rel.rsplit("/", 1)[-1] in ("cli.py", "train.py") or rel == "squeeze/train_cli.py"


def violations(root: Path) -> list[str]:
    """One line per import against the direction ("file:line imports module: why"); [] when the tree follows it."""
    out: list[str] = []
    for pkg, files in package_files(root).items():
        for path in files:
            for imp in imports_of(path, root):
                top = imp.module.split(".")[0]
                where = f"{imp.file}:{imp.line} imports {imp.module}"
                allowed = FILE_ALLOWED.get(imp.file, ALLOWED[pkg])
                if pkg != "squeeze_suite" and top in SUITE and top != pkg and top not in allowed:
                    out.append(f"{where}: {pkg} may import " + (", ".join(sorted(allowed)) or "no other package"))
                trainer = [m for m in (imp.module, *imp.names) if m in TRAINER_MODULES]
                if trainer and not trainer_user(imp.file):
                    out.append(f"{imp.file}:{imp.line} imports {trainer[0]}: library code must not use the trainer "
                               f"or its CLI options (only a package's cli.py and train.py may)")
                if is_deploy_runtime(imp.file) and (top == "torch" or top in MODEL_PACKAGES):
                    out.append(f"{where}: deploy's runtimes run without torch and without the model packages")
    return out


# ------------------------------------------------------------------------------------------------- the suite
def test_the_suite_follows_the_dependency_direction():
    assert package_files(ROOT).keys() >= {"squeeze", "squeezedet", "squeezeseg"}  # the checker sees the tree
    assert violations(ROOT) == []


# ------------------------------------------------------------------------------------------- the checker itself
def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for pkg in {rel.split("/")[0] for rel in files}:
        (root / pkg / "__init__.py").touch()


def test_checker_finds_imports_at_any_depth_and_in_every_form(tmp_path):
    trainer = "library code must not use the trainer or its CLI options (only a package's cli.py and train.py may)"
    _write(tmp_path, {
        "squeeze/vis.py": "import numpy\n\ndef f():\n    from squeezedet.model import SqueezeDet\n",  # lazy
        "squeeze/kitti.py": "import squeezeseg.data as d\n",
        "squeezedet/model.py": "from squeezeseg import crf\n",  # model packages do not import each other
        "squeezeseg/data.py": "from squeeze import errors, train\n",  # the trainer, named as a submodule
        "squeezeseg/predict.py": "from ..squeeze.train_cli import parse_overrides\n",  # relative, resolved
        "domain_adapt/steps.py": "import squeezedet\nfrom squeezeseg.data import RangeDataset\n",
    })
    assert violations(tmp_path) == [
        "domain_adapt/steps.py:1 imports squeezedet: domain_adapt may import squeeze, squeezeseg",
        "squeeze/kitti.py:1 imports squeezeseg.data: squeeze may import no other package",
        "squeeze/vis.py:4 imports squeezedet.model: squeeze may import no other package",
        "squeezedet/model.py:1 imports squeezeseg: squeezedet may import squeeze",
        f"squeezeseg/data.py:1 imports squeeze.train: {trainer}",
        f"squeezeseg/predict.py:1 imports squeeze.train_cli: {trainer}",
    ]


def test_relative_imports_resolve_against_the_package(tmp_path):
    _write(tmp_path, {"squeezedet/sub/a.py": "from ...squeezeseg import x\nfrom . import b\nfrom .. import model\n"})
    found = [(i.module, i.names) for i in imports_of(tmp_path / "squeezedet/sub/a.py", tmp_path)]
    assert found == [("squeezeseg", ("squeezeseg.x",)), ("squeezedet.sub", ("squeezedet.sub.b",)),
                     ("squeezedet", ("squeezedet.model",))]


def test_commands_recipes_and_the_top_package_have_their_rights(tmp_path):
    _write(tmp_path, {
        "squeezedet/cli.py": "from squeeze.train_cli import add_train_arguments\n",
        "squeezedet/train.py": "from squeeze.train import train\n",
        "squeeze/train_cli.py": "from squeeze.train import TrainConfig\n",
        "squeeze_suite/cli.py": "import squeezedet.cli, squeezeseg.cli, domain_adapt.cli, deploy\n",
        "squeeze_suite/demo.py": "from squeezedet.predict import detect\n",
        "latte/cli.py": "from deploy.runtime_onnx import OnnxDetector\nfrom squeezedet.predict import load_model\n",
        "deploy/export.py": "import torch\nfrom squeezedet.model import SqueezeDet\n",
        "dnas/heads.py": "from squeezeseg.squeezeseg import SqueezeSeg\nfrom squeezedet.loss import Targets\n",
        "bench/bench_x.py": "from squeezedet.train import train_detector\nimport squeeze.train\n",  # not checked
    })
    assert violations(tmp_path) == []


def test_latte_library_and_deploy_runtimes_are_held_to_their_limits(tmp_path):
    runtime = "deploy's runtimes run without torch and without the model packages"
    _write(tmp_path, {
        "latte/scene.py": "from squeezedet.predict import detect\n",
        "deploy/runtime_onnx.py": "import numpy\nimport torch.nn\n",
        "deploy/runtimes/trt.py": "from squeezeseg.data import project\n",
        "deploy/export.py": "import torch\n",  # export may use torch
    })
    assert violations(tmp_path) == [
        f"deploy/runtime_onnx.py:2 imports torch.nn: {runtime}",
        f"deploy/runtimes/trt.py:1 imports squeezeseg.data: {runtime}",
        "latte/scene.py:1 imports squeezedet.predict: latte may import squeeze",
    ]
