"""`squeeze deploy ...`: export a checkpoint to ONNX and list the deployment formats.

The choices and help text come from the one table of formats (deploy.formats). Building the parser imports no
torch, no runtime and no OpenCV; each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deploy.formats import FORMATS, format_of_path, formats_table


def add_deploy_parser(subparsers) -> None:
    formats = ", ".join(f"{f.name} ({f.suffix})" for f in FORMATS)
    deploy = subparsers.add_parser(
        "deploy", help="export to ONNX and run without torch: onnxruntime, OpenVINO, TensorRT",
        description=f"Export trained checkpoints for deployment and inspect the formats: {formats}. Every exported "
                    "model has a JSON sidecar beside it (model.onnx -> model.json) holding what inference needs.")
    sub = deploy.add_subparsers(dest="deploy_command", metavar="DEPLOY_COMMAND")

    p = sub.add_parser(
        "export", help="checkpoint -> ONNX model + JSON sidecar",
        description="Export a detection or segmentation checkpoint to ONNX (dynamo exporter, dynamic batch, NCHW, "
                    "BatchNorm folded), check it (onnx.checker, shape inference), simplify it (onnxslim), check "
                    "that TensorRT supports every operator, and write the sidecar beside it. Prints the export "
                    "time, the file size and the operators.")
    p.add_argument("checkpoint", type=Path, help="detection or segmentation checkpoint (.pt)")
    p.add_argument("-o", "--out", type=Path, required=True, help="ONNX file to write (.onnx)")
    p.add_argument("--no-crf", action="store_true",
                   help="leave SqueezeSeg's recurrent CRF out of the graph (faster; the raw conv14 logits)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, >= 17")
    p.add_argument("--no-simplify", action="store_true", help="skip the onnxslim simplification")
    p.add_argument("--batch", type=int, default=None,
                   help="fix the batch size (default: a dynamic batch axis)")
    p.set_defaults(run=run_export)

    p = sub.add_parser("formats", help="the deployment formats, their runtimes and what is installed",
                       description="The table of formats: file suffix, precisions, runtime module, whether it is "
                                   "installed here, and how to install it.")
    p.set_defaults(run=run_formats)


def run_export(args: argparse.Namespace) -> int:
    from squeeze.errors import DataError

    fmt = format_of_path(args.out)
    if fmt.name != "onnx":
        raise DataError(args.out, f"export writes ONNX (.onnx); the {fmt.name} format ({fmt.suffix}) is built from "
                                  "the ONNX model afterwards")
    from deploy.export import export_onnx

    report = export_onnx(args.checkpoint, args.out, crf=not args.no_crf, opset=args.opset,
                         simplify=not args.no_simplify, batch=args.batch)
    print(report.summary())
    print(f"sidecar: {report.sidecar}")
    return 0


def run_formats(args: argparse.Namespace) -> int:
    print(formats_table())
    return 0
