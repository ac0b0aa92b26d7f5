"""`squeeze deploy ...`: export a checkpoint to ONNX, list the deployment formats, quantise to INT8, bench, build a
TensorRT engine.

The choices and help text come from the one table of formats (deploy.formats). Building the parser imports no
torch, no runtime and no OpenCV; each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deploy.export import CRF_PLACES
from deploy.formats import FORMATS, TARGETS, format_of_path, formats_table


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
    p.add_argument("--crf", choices=CRF_PLACES, default="graph",
                   help="where SqueezeSeg's recurrent CRF runs: in the graph (every runtime, TensorRT included), on "
                        "the host after the network (the sidecar carries it; numba, float32, about 2x faster than "
                        "in the graph on CPUs), or none (the raw conv14 logits); models without a CRF ignore it")
    p.add_argument("--no-crf", dest="crf", action="store_const", const="none", help="the same as --crf none")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, >= 17")
    p.add_argument("--no-simplify", action="store_true", help="skip the onnxslim simplification")
    p.add_argument("--batch", type=int, default=None,
                   help="fix the batch size (default: a dynamic batch axis)")
    p.add_argument("--fp16", action="store_true",
                   help="float16 weights and arithmetic for GPUs (TensorRT, onnxruntime's CUDA provider), inputs "
                        "and outputs kept float32 so pre- and post-processing are unchanged; half the file size")
    p.set_defaults(run=run_export)

    p = sub.add_parser(
        "convert", help="ONNX model -> OpenVINO IR (.xml + .bin) with its sidecar",
        description="Convert an exported (fp32, fp16 or int8) ONNX model to OpenVINO's IR: model.xml and model.bin, "
                    "and the sidecar beside them (model.json; an IR beside the ONNX file under the same name shares "
                    "its sidecar). The IR loads faster than the ONNX file and gives the same outputs; "
                    "`squeeze seg|det predict --model model.xml` and load_predictor run it in OpenVINO. TensorRT "
                    "engines are built on the target instead (squeeze deploy trt).")
    p.add_argument("model", type=Path, help=".onnx model with its sidecar (squeeze deploy export / quantize)")
    p.add_argument("-o", "--out", type=Path, required=True, help="IR file to write (.xml; the .bin goes beside it)")
    p.add_argument("--precision", choices=("f32", "f16"), default="f32",
                   help="weights as they are (f32; the default, for parity with the ONNX model) or compressed to "
                        "float16 (f16: half the .bin, for GPUs; OpenVINO's CPU plugin decompresses them at load)")
    p.set_defaults(run=run_convert)

    p = sub.add_parser("formats", help="the deployment formats, their runtimes and what is installed",
                       description="The table of formats: file suffix, precisions, runtime module, whether it is "
                                   "installed here, and how to install it.")
    p.set_defaults(run=run_formats)

    targets = "; ".join(f"{t.name} ({', '.join(t.formats)}): {t.activations} activations, "
                        f"{'int32' if t.int32_bias else 'float'} biases" for t in TARGETS.values())
    p = sub.add_parser(
        "quantize", help="fp32 ONNX -> INT8 (QDQ) calibrated on a dataset folder",
        description="Static post-training quantisation (onnxruntime): QDQ format, per-channel symmetric int8 "
                    "weights, ranges measured on frames of a dataset folder put through the runtimes' own "
                    f"pre-processing. Writes the int8 model and its sidecar. Targets: {targets}.")
    p.add_argument("model", type=Path, help="fp32 .onnx model with its sidecar (squeeze deploy export)")
    p.add_argument("--calib", type=Path, required=True, metavar="DIR",
                   help="dataset folder: KITTI layout (training/image_2 for a detector, training/velodyne for a "
                        "segmenter) or SqueezeSeg's lidar_2d/*.npy")
    p.add_argument("-o", "--out", type=Path, required=True, help="int8 ONNX file to write (.onnx)")
    p.add_argument("--frames", type=int, default=32, help="calibration frames, spread over the folder (default 32)")
    p.add_argument("--keep-float", nargs="+", default=[], metavar="LAYER",
                   help="layers left in float, by layer name (e.g. convdet, fire11.expand.expand1x1) or node name")
    p.add_argument("--keep-worst", type=int, default=None, metavar="K",
                   help="also keep in float the K layers that hurt most (per-layer sensitivity; default: 0 "
                        "where the range of the head's input is chosen on the calibration frames instead, else 1 "
                        "for a segmenter: deploy.quantize.default_keep_worst)")
    p.add_argument("--sensitivity", action="store_true",
                   help="print every layer's sensitivity (its error when it alone is int8) and write it to "
                        "OUT.sensitivity.json")
    p.add_argument("--sensitivity-frames", type=int, default=4, metavar="N",
                   help="calibration frames the sensitivity is measured on (default 4)")
    p.add_argument("--method", choices=("minmax", "percentile"), default="minmax",
                   help="how activation ranges are set from the calibration frames (default minmax)")
    p.add_argument("--target", choices=tuple(TARGETS), default="cpu",
                   help="the runtime the Q/DQ graph is written for: cpu (onnxruntime, OpenVINO: uint8 activations) "
                        "or tensorrt (symmetric int8 activations, float biases: what 'squeeze deploy trt --int8' "
                        "builds); default cpu")
    p.set_defaults(run=run_quantize)

    p = sub.add_parser(
        "bench", help="latency of exported models: torch eager and each runtime and precision",
        description="Network-only and end-to-end (points or decoded image in, labels or boxes out) p50 / p90 / p99 "
                    "ms and FPS, batch 1, interleaved rounds after warm-up, for torch eager (with --checkpoint) and "
                    "every installed runtime and precision of each model (onnxruntime; OpenVINO with the f32 "
                    "hint, and bf16 for fp32 models). Prints a table, writes OUT/bench.jsonl and OUT/bench.png.")
    p.add_argument("models", type=Path, nargs="+", help="exported models (.onnx / .xml) with their sidecars")
    p.add_argument("--checkpoint", type=Path, action="append", default=[], metavar="CKPT",
                   help="torch checkpoint timed beside the models of its task (repeat for both tasks)")
    p.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="KITTI folder whose first image / .bin scan is the input (default: a synthetic one)")
    p.add_argument("--runs", type=int, default=50, help="timed rounds (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed rounds first (default 10)")
    p.add_argument("--threads", type=int, default=2, help="threads per runtime (default 2)")
    p.add_argument("--settle-ms", type=float, default=None, metavar="MS",
                   help="pause before each timed call, so that threads a runtime leaves spinning are not timed "
                        "against the next candidate (default 50, deploy.bench.SETTLE_MS; 0: calls back to back)")
    p.add_argument("--mode", choices=("network", "end_to_end", "both"), default="both", help="what to time")
    p.add_argument("--out", type=Path, default=Path("deploy_bench"), help="folder for bench.jsonl and bench.png")
    p.set_defaults(run=run_bench)

    p = sub.add_parser(
        "bundle", help="one folder to ship: model, sidecar, label map and a single-file infer.py",
        description="Write a folder holding the model (model.onnx), its sidecar (model.json), the label map "
                    "(labels.json: class ids, names, RGB colours), README.txt and infer.py: a single-file "
                    "inference script needing only numpy, OpenCV and one runtime (no torch, no squeeze). "
                    "`python infer.py image.png|scan.bin ... --out DIR` writes KITTI result lines (detection) "
                    "or .label files (segmentation) and a picture.")
    p.add_argument("model", type=Path, help="exported .onnx model with its sidecar (squeeze deploy export)")
    p.add_argument("-o", "--out", type=Path, required=True, help="the bundle's folder (created)")
    p.add_argument("--runtime", choices=("onnxruntime", "openvino"), default="onnxruntime",
                   help="the runtime infer.py uses by default (default onnxruntime; on an Intel CPU openvino runs "
                        "an int8 model 1.3-2x faster: README, deployed speed)")
    p.set_defaults(run=run_bundle)

    p = sub.add_parser(
        "trt", help="ONNX model -> TensorRT engine (on the Jetson / GPU machine that runs it)",
        description="Build a serialized TensorRT engine from an exported (fp32) or quantised (int8, QDQ) ONNX model "
                    "through the TensorRT Python API, or trtexec when only that is present. Checks every operator "
                    "first, writes the exact trtexec command line beside the engine (ENGINE.trtexec.txt) and the "
                    "engine's sidecar. Where neither TensorRT nor trtexec is installed it writes both and exits 2; "
                    "JetPack ships both (deploy/jetson/README.md).")
    p.add_argument("model", type=Path, help=".onnx model with its sidecar (squeeze deploy export / quantize)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="half-precision kernels (an fp32 model)")
    precision.add_argument("--int8", action="store_true",
                           help="int8, explicit quantisation (a QDQ model from squeeze deploy quantize --target "
                                "tensorrt; the default for one); without either flag an fp32 model builds as fp32 "
                                "(TF32 off)")
    p.add_argument("-o", "--out", type=Path, default=None,
                   help="engine file (.engine; default MODEL.PRECISION.engine beside the model)")
    p.add_argument("--workspace", type=int, default=1024, metavar="MB", help="builder workspace, MiB (default 1024)")
    p.add_argument("--max-batch", type=int, default=1, metavar="N",
                   help="largest batch the engine takes (its profile: 1 / 1 / N; default 1)")
    p.set_defaults(run=run_trt)


def run_export(args: argparse.Namespace) -> int:
    from squeeze.errors import DataError

    fmt = format_of_path(args.out)
    if fmt.name != "onnx":
        raise DataError(args.out, f"export writes ONNX (.onnx); the {fmt.name} format ({fmt.suffix}) is built from "
                                  "the ONNX model afterwards")
    from deploy.export import export_onnx

    report = export_onnx(args.checkpoint, args.out, crf=args.crf, opset=args.opset,
                         simplify=not args.no_simplify, batch=args.batch, fp16=args.fp16)
    print(report.summary())
    print(f"sidecar: {report.sidecar}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    import time

    from squeeze.errors import DataError

    fmt = format_of_path(args.out)
    if fmt.name != "openvino":
        raise DataError(args.out, f"convert writes OpenVINO IR (.xml); a {fmt.name} model ({fmt.suffix}) comes from "
                                  f"{'squeeze deploy export' if fmt.name == 'onnx' else 'squeeze deploy trt'}")
    if not fmt.present:
        raise DataError(args.out, f"writing OpenVINO IR needs the {fmt.package} package ({fmt.install})")
    from deploy.runtimes.openvino import convert_to_ir
    from deploy.sidecar import sidecar_path

    started = time.perf_counter()
    xml = convert_to_ir(args.model, args.out, precision=args.precision)
    size = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    print(f"wrote {xml} and {xml.with_suffix('.bin').name} ({args.precision} weights, {size / 1e6:.2f} MB, "
          f"{time.perf_counter() - started:.1f} s)")
    print(f"sidecar: {sidecar_path(xml)}")
    return 0


def run_formats(args: argparse.Namespace) -> int:
    print(formats_table())
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    from squeeze.errors import DataError

    for flag, value, low in (("--frames", args.frames, 1), ("--keep-worst", args.keep_worst or 0, 0),
                             ("--sensitivity-frames", args.sensitivity_frames, 1)):
        if value < low:
            raise DataError(None, f"{flag} must be >= {low}, got {value}")
    if args.out.suffix != ".onnx":
        raise DataError(args.out, "the int8 model is an ONNX file: the output must end in .onnx")
    import json

    from deploy.quantize import calibration_inputs, default_keep_worst, layer_sensitivity, quantize_model
    from deploy.sidecar import read_sidecar
    from squeeze.atomic import atomic_write_text

    sidecar = read_sidecar(args.model)
    feeds = calibration_inputs(sidecar, args.calib, args.frames)
    keep = list(args.keep_float)
    if args.keep_worst is None:
        args.keep_worst = default_keep_worst(args.model, sidecar)
    if args.keep_worst or args.sensitivity:
        ranking = layer_sensitivity(args.model, feeds, frames=args.sensitivity_frames, sidecar=sidecar, progress=True,
                                    target=args.target)
        measure = "labels changed" if sidecar.task == "segmentation" else "mean |score change|"
        if args.sensitivity:
            print(f"per-layer sensitivity ({measure}, only that layer int8, {min(len(feeds), args.sensitivity_frames)}"
                  f" frames), worst first:")
            for s in ranking:
                print(f"  {s.error:10.6f}  {s.layer}  ({s.node})")
            atomic_write_text(args.out.with_suffix(".sensitivity.json"), json.dumps(
                [{"layer": s.layer, "node": s.node, "error": s.error} for s in ranking], indent=2) + "\n")
        keep += [s.layer for s in ranking[:args.keep_worst] if s.layer not in keep]
    result = quantize_model(args.model, args.out, feeds, keep_float=keep, sidecar=sidecar, method=args.method,
                            target=args.target)
    print(f"wrote {result.path} ({result.quantized_layers} int8 layers, {result.calibration_frames} calibration "
          f"frames, target {args.target}; kept in float: {', '.join(result.float_layers) or 'none'})")
    change = f"{result.check_error:.2%} of valid pixels change label" if sidecar.task == "segmentation" else \
        f"scores (class probability x confidence) move by {result.check_error:.2g} on average"
    print(f"int8 against fp32 on {result.check_frames} calibration frames: {change}")
    head = json.loads(result.sidecar.read_text())["export"].get("head_input_range", {})
    for tensor, (low, high) in head.get("tensors", {}).items():
        print(f"{head['layer']} reads {tensor} in int8 range [{low:.4g}, {high:.4g}]: {head['fraction']:g} of the "
              f"calibrated max {head['calibrated_max']:.4g} (deploy.quantize.head_input_range)")
    print(f"sidecar: {result.sidecar}")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from squeeze.errors import DataError

    if args.runs < 1 or args.warmup < 0 or args.threads < 1 or (args.settle_ms or 0) < 0:
        raise DataError(None, f"--runs and --threads must be >= 1, --warmup and --settle-ms >= 0, got {args.runs}, "
                              f"{args.threads}, {args.warmup} and {args.settle_ms}")
    from deploy.bench import (
        SETTLE_MS,
        bar_chart,
        bench,
        candidates,
        data_input,
        format_table,
        torch_candidate,
        write_json_lines,
    )
    from deploy.sidecar import read_sidecar

    by_task: dict[str, list] = {}
    for model in args.models:
        by_task.setdefault(read_sidecar(model).task, []).append(model)
    modes = ("network", "end_to_end") if args.mode == "both" else (args.mode,)
    rows = []
    for task, models in by_task.items():
        x = data_input(task, args.data)
        cands = []
        for ckpt in args.checkpoint:
            first = read_sidecar(models[0])
            seg = first.segmentation
            crf = (seg.crf or seg.host_crf is not None) if seg is not None else None
            if _checkpoint_task(ckpt) == task:
                cands.append(torch_candidate(ckpt, x, args.threads, crf=crf))
        for model in models:
            cands += candidates(model, x, args.threads)
        if not cands:
            raise DataError(models[0], "no runtime is installed to run it (pip install 'squeeze-suite[deploy]')")
        rows += bench(cands, runs=args.runs, warmup=args.warmup, threads=args.threads, modes=modes, progress=True,
                      settle_ms=SETTLE_MS if args.settle_ms is None else args.settle_ms)
    print(format_table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_lines(rows, args.out / "bench.jsonl")
    bar_chart(rows, args.out / "bench.png")
    print(f"wrote {args.out / 'bench.jsonl'} and {args.out / 'bench.png'}")
    return 0


def run_trt(args: argparse.Namespace) -> int:
    import sys

    from deploy.tensorrt import NoTensorRTError, build_engine

    precision = "fp16" if args.fp16 else "int8" if args.int8 else None
    try:
        build = build_engine(args.model, precision, args.out, workspace_mb=args.workspace, max_batch=args.max_batch)
    except NoTensorRTError as e:
        print(f"squeeze deploy trt: {e}", file=sys.stderr)
        return 2
    print(f"wrote {build.engine} ({build.precision}, {build.builder}, {build.seconds:.1f} s, "
          f"{build.engine.stat().st_size / 1e6:.2f} MB)")
    print(f"sidecar: {build.sidecar}")
    print(f"trtexec command: {build.commands}")
    return 0

def run_bundle(args: argparse.Namespace) -> int:
    from deploy.bundle import make_bundle

    b = make_bundle(args.model, args.out, args.runtime)
    print(f"wrote {b.folder}: {b.model.name}, {b.sidecar.name}, {b.labels.name}, {b.script.name}, {b.readme.name} "
          f"({b.task}, runtime {b.runtime})")
    print(f"run: python {b.script} INPUT ... --out DIR")
    return 0


def _checkpoint_task(path: Path) -> str | None:
    from squeeze.checkpoint import load_checkpoint

    config = load_checkpoint(path)["config"]
    return config.get("task") if isinstance(config, dict) else None
