"""`squeeze deploy bundle`: one folder to copy to a car computer, run with numpy, OpenCV and one runtime.

    BUNDLE/model.onnx    the network (copied)
    BUNDLE/model.json    its sidecar (model_file renamed to model.onnx)
    BUNDLE/labels.json   the label map: task and, per class, id, name and RGB colour
    BUNDLE/infer.py      deploy/bundle_infer.py, with the chosen runtime as its default: no torch, no squeeze
    BUNDLE/README.txt    what to install and the command lines

The script carries its own copy of the numpy pre- and post-processing; tests/test_deploy_bundle.py keeps it equal
to squeeze.detection / squeeze.segmentation / squeeze.range_image and to the onnxruntime runtime, function by
function and end to end with torch and the suite blocked.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from deploy.sidecar import read_sidecar, write_sidecar
from squeeze.atomic import atomic_write_text
from squeeze.errors import DataError

__all__ = ["BUNDLE_RUNTIMES", "Bundle", "make_bundle"]

BUNDLE_RUNTIMES = ("onnxruntime", "openvino")  # the runtimes infer.py can drive; both read .onnx directly
SCRIPT = Path(__file__).with_name("bundle_infer.py")
_RUNTIME_LINE = 'DEFAULT_RUNTIME = "onnxruntime"'


@dataclass(frozen=True)
class Bundle:
    """What `make_bundle` wrote."""

    folder: Path
    model: Path  # folder/model.onnx
    sidecar: Path  # folder/model.json
    labels: Path  # folder/labels.json
    script: Path  # folder/infer.py
    readme: Path  # folder/README.txt
    task: str
    runtime: str


def make_bundle(model_path: str | Path, out_dir: str | Path, runtime: str = "onnxruntime") -> Bundle:
    """Write the bundle of an exported .onnx model (with its sidecar beside it) into out_dir (created; the five
    files above are overwritten). DataError naming the file for an unknown runtime, a model that is not .onnx or
    missing, a missing or bad sidecar, a model whose CRF runs on the host, or an output that is a file."""
    model_path, out_dir = Path(model_path), Path(out_dir)
    if runtime not in BUNDLE_RUNTIMES:
        raise DataError(out_dir, f"unknown runtime {runtime!r}: a bundle runs in one of {', '.join(BUNDLE_RUNTIMES)}")
    if model_path.suffix != ".onnx":
        raise DataError(model_path, "a bundle takes an exported .onnx model (squeeze deploy export / quantize)")
    if not model_path.is_file():
        raise DataError(model_path, "no such model file")
    sidecar = read_sidecar(model_path)  # DataError naming model.json when it is missing or malformed
    if sidecar.segmentation is not None and sidecar.segmentation.host_crf is not None:
        raise DataError(model_path, "this model leaves its CRF to the host (exported with --crf host, which "
                                    "needs numba); a bundle's infer.py needs only numpy: export with --crf graph")
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(out_dir, "the bundle's output must be a folder, and this is a file")
    out_dir.mkdir(parents=True, exist_ok=True)

    model = out_dir / "model.onnx"
    if model.resolve() != model_path.resolve():
        shutil.copyfile(model_path, model)
    side = write_sidecar(model, dataclasses.replace(sidecar, model_file=model.name))
    labels = out_dir / "labels.json"
    atomic_write_text(labels, json.dumps({
        "task": sidecar.task,
        "classes": [{"id": i, "name": n, "color_rgb": list(c)}
                    for i, (n, c) in enumerate(zip(sidecar.class_names, sidecar.class_colors, strict=True))],
    }, indent=2) + "\n")
    script = out_dir / "infer.py"
    atomic_write_text(script, script_text(runtime))
    readme = out_dir / "README.txt"
    atomic_write_text(readme, readme_text(sidecar.task, sidecar.model_name, sidecar.precision, runtime))
    return Bundle(out_dir, model, side, labels, script, readme, sidecar.task, runtime)


def script_text(runtime: str) -> str:
    """deploy/bundle_infer.py with `runtime` as its default runtime."""
    text = SCRIPT.read_text(encoding="utf-8")
    if text.count(_RUNTIME_LINE) != 1:  # the marker line is how the default is set: it must stay unique
        raise DataError(SCRIPT, f"expected exactly one line {_RUNTIME_LINE!r}")
    return text.replace(_RUNTIME_LINE, f'DEFAULT_RUNTIME = "{runtime}"')


def readme_text(task: str, model_name: str, precision: str, runtime: str) -> str:
    other = next(r for r in BUNDLE_RUNTIMES if r != runtime)
    if task == "detection":
        usage = ("  python infer.py image1.png image2.png --out results\n\n"
                 "writes results/image1.txt (KITTI result lines: class, -1 -1 -10, left top right bottom in the\n"
                 "image's pixels, -1 x 3, -1000 x 3, -10, score) and results/image1.png (the boxes drawn in the\n"
                 "class colours of labels.json).")
    else:
        usage = ("  python infer.py 000000.bin 000001.bin --out results\n\n"
                 "writes results/000000.label (one little-endian uint32 per point of the scan, class id in the\n"
                 "lower 16 bits, SemanticKITTI's layout; ids in labels.json; 0 outside the field of view) and\n"
                 "results/000000.png (the range image coloured by class, rows repeated 4 times).\n"
                 "Scans are KITTI .bin files (float32 x, y, z, intensity), stored ring by ring as the Velodyne\n"
                 "writes them; a cloud without that order is projected on uniform elevation rows (with a warning).")
    return (f"Squeeze model bundle: {model_name} ({task}, {precision})\n\n"
            f"Files: model.onnx (the network), model.json (its pre- and post-processing parameters),\n"
            f"labels.json (class ids, names and RGB colours), infer.py (this folder's only code).\n\n"
            f"Install (Python >= 3.10): pip install numpy opencv-python-headless {runtime}\n\n"
            f"Run:\n{usage}\n\n"
            f"Options: --runtime {other} (pip install {other}) to use the other runtime; --npz also writes\n"
            f"NAME.npz with the full-precision arrays; --model PATH for another model.onnx with its model.json;\n"
            f"--threads N (default 2).\n")
