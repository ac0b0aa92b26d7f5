"""`squeeze seg train|eval|predict|stats|demo`: LiDAR segmentation with SqueezeSeg and SqueezeSegV2."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("squeeze.seg")

# The keys of squeezeseg.models.MODELS, spelled out so that --help needs no torch (tests/test_cli.py keeps them equal).
MODEL_NAMES = ("squeezeseg_kitti", "squeezeseg_kitti_360", "squeezeseg_v2_kitti", "squeezeseg_v2_kitti_360")


def add_seg_parser(subparsers, load_segmenter: Callable[..., Any] | None = None) -> None:
    """Register `squeeze seg ...`. load_segmenter(path) -> a segmenter (squeeze.predictor.Segmenter with
    segment_pixels and projection) is how `predict` loads its model: the command root passes one that also reads
    exported models (.onnx, OpenVINO .xml, TensorRT .engine: squeeze_suite.predictors); without it `predict` takes
    checkpoints only."""
    from squeeze.model_cli import add_export_parser
    from squeeze.train_cli import add_train_arguments

    seg = subparsers.add_parser("seg", help="LiDAR point segmentation: SqueezeSeg, SqueezeSegV2",
                                description="Train, evaluate and run SqueezeSeg / SqueezeSegV2 on range images of "
                                            "KITTI, simulated, SemanticKITTI or SqueezeSeg .npy folders.")
    sub = seg.add_subparsers(dest="seg_command", metavar="SEG_COMMAND")

    p = sub.add_parser("train", help="train a segmentation model",
                       description="Train on a folder (any kind `squeeze seg stats` accepts); evaluates on --val every "
                                   "--eval-every steps, keeps best.pt by mean IoU, writes metrics.csv and a learning "
                                   "curve PNG into --out. Resume with --resume.")
    p.add_argument("data", type=Path, help="training folder")
    p.add_argument("--val", type=Path, help="validation folder (default: none)")
    p.add_argument("--split", default=None, help="training split list name (default: every frame)")
    p.add_argument("--val-split", default=None, help="validation split list name (default: every frame)")
    p.add_argument("--model", choices=MODEL_NAMES, default="squeezeseg_v2_kitti", help="named model config")
    p.add_argument("--no-crf", action="store_true", help="drop the recurrent CRF")
    p.add_argument("--crf-mode", choices=["reference", "textbook"], help="CRF form (default: the model's)")
    add_train_arguments(p, steps=25_000, batch_size=8)
    p.add_argument("--stats", default="kitti",
                   help="normalisation: 'kitti' (SqueezeSeg's), 'auto' (computed on 200 training frames) or a JSON "
                        "file from `squeeze seg stats`")
    p.add_argument("--no-flip", action="store_true", help="no left-right flip augmentation")
    p.add_argument("--point-drop", type=float, default=0.0, help="fraction of points dropped at random (default 0)")
    p.set_defaults(run=run_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint: per-class IoU, precision, recall",
                       description="Per-class IoU / precision / recall with TP, FP, FN summed over the set, on valid "
                                   "pixels (SqueezeSeg's protocol) and on points; writes metrics.json and confusion "
                                   "matrix PNGs.")
    p.add_argument("checkpoint", type=Path, nargs="?", default=None,
                   help="segmentation checkpoint, or an exported model as with --model (default: the bundled "
                        "SqueezeSegV2 adapted to real scans)")
    p.add_argument("data", type=Path, help="folder to evaluate on: range images (lidar_2d/*.npy or .npy files), a "
                                           "KITTI object folder or a SemanticKITTI folder")
    p.add_argument("--model", type=Path, default=None, metavar="FILE",
                   help="an exported model instead of the checkpoint: .onnx, .xml (OpenVINO IR) or .engine")
    p.add_argument("--split", default=None, help="split list name (default: every frame)")
    p.add_argument("--out", type=Path, required=True, help="folder for metrics.json and pictures")
    p.add_argument("--max-frames", type=int, default=None, help="evaluate the first N frames (default: all)")
    p.add_argument("--batch-size", type=int, default=8, help="frames per forward pass")
    p.set_defaults(run=run_eval, load_segmenter=load_segmenter)

    p = sub.add_parser("predict", help="segment scans: .bin, .npy or .pcd -> per-point .label and PNGs",
                       description="Segment LiDAR scans. Writes, per input, a SemanticKITTI-style .label (one uint32 "
                                   "per point, class in the lower 16 bits; points outside the image get 0) or, for "
                                   ".npy input, a (H, W) class .npy; and PNGs of the range image and bird's-eye view "
                                   "coloured by class.")
    p.add_argument("checkpoint", type=Path, nargs="?", default=None,
                   help="segmentation checkpoint, or an exported model as with --model (default: the bundled "
                        "SqueezeSegV2 adapted to real scans)")
    p.add_argument("inputs", type=Path, nargs="+",
                   help=".bin / .npy / .pcd files or folders of them (a dataset folder: its training/velodyne, "
                        "velodyne or lidar_2d)")
    p.add_argument("--model", type=Path, default=None, metavar="FILE",
                   help="an exported model instead of the checkpoint: .onnx (onnxruntime), .xml (OpenVINO IR) or "
                        ".engine (TensorRT), with its .json sidecar beside it (squeeze deploy export)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--uniform", action="store_true",
                   help="project with uniform elevation rows (automatic for .pcd and for unordered .bin clouds)")
    p.set_defaults(run=run_predict, load_segmenter=load_segmenter)

    p = sub.add_parser("stats", help="compute input normalisation (mean, std per channel) of a folder",
                       description="Mean and standard deviation of each input channel (x, y, z, intensity, range) "
                                   "over the valid pixels of a folder's range images, written as a JSON file that "
                                   "`squeeze seg train --stats FILE` reads.")
    p.add_argument("data", type=Path, help="folder (any kind `squeeze seg train` accepts)")
    p.add_argument("--split", default=None, help="split list name (default: every frame)")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--max-frames", type=int, default=None, help="use the first N frames (default: all)")
    p.set_defaults(run=run_stats)

    add_export_parser(sub, "segmentation", "last.pt, best.pt", run_export)

    p = sub.add_parser("demo", help="segment the scans of a folder and draw ground truth beside prediction",
                       description="Segment every scan of a labelled folder (for new simulated frames: "
                                   "`squeeze sim --out DIR --frames 3 --seed 123`) and write ground truth and "
                                   "prediction side by side; `squeeze demo` does both steps.")
    p.add_argument("data", type=Path, help="labelled folder (simulated, KITTI, SemanticKITTI or .npy)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint (default: the bundled SqueezeSegV2 trained on the simulated world)")
    p.add_argument("--out", type=Path, default=Path("outputs/seg_demo"), help="folder for the pictures")
    p.set_defaults(run=run_demo)
    seg.set_defaults(run=lambda args: seg.print_help() or 2)


# ------------------------------------------------------------------------------------------------- train
def run_train(args: argparse.Namespace) -> int:
    import torch

    from squeeze.train_cli import check_batch_size, model_overrides, train_config_from_args
    from squeezeseg.models import MODELS
    from squeezeseg.train import segmenter_run, train_segmenter

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = model_overrides(args, MODELS[args.model][0]())  # the chosen config types the --set values
    if args.no_crf:
        overrides["use_crf"] = False
    if args.crf_mode:
        overrides["crf_mode"] = args.crf_mode
    run = segmenter_run(args.data, model=args.model, overrides=overrides, val=args.val, split=args.split,
                        val_split=args.val_split, stats=args.stats, flip=not args.no_flip, point_drop=args.point_drop,
                        seed=args.seed)
    check_batch_size(len(run.train_set), args.batch_size, args.data)  # names the flag to pass
    trained = train_segmenter(run, args.out, train_config_from_args(args), val_frames=args.val_frames,
                              resume=args.resume)
    result = trained.result
    print(f"done: {result.step} steps; last {result.last_checkpoint}; best {result.best_checkpoint} "
          f"(miou {result.best_value}); curve {trained.learning_curve}")
    return 0


# ------------------------------------------------------------------------------------------------- eval
def check_max_frames(max_frames: int | None) -> None:
    """--max-frames is a count of frames to use: None (all) or at least 1 (0 made metrics of nothing, NaN)."""
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1 (or left out for every frame), got {max_frames}")


def run_eval(args: argparse.Namespace) -> int:
    from squeeze.kitti import atomic_write_text
    from squeezeseg.data import RangeDataset, SegDataConfig
    from squeezeseg.metrics import plot_confusion
    from squeezeseg.predict import evaluate, load_model

    check_max_frames(args.max_frames)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.model is not None and args.checkpoint is not None:
        raise ValueError("give a segmentation checkpoint or --model FILE, not both")
    if args.model is None:
        if args.checkpoint is None:  # as `squeeze det eval DATA`: the bundled weights
            from squeeze.model_cli import checkpoint_or_bundled
            from squeezeseg.predict import BUNDLED_NOTE, BUNDLED_WEIGHTS

            args.checkpoint = checkpoint_or_bundled(None, BUNDLED_WEIGHTS, BUNDLED_NOTE)
        loaded = load_model(args.checkpoint)
        model, class_names, data_config = loaded.model, loaded.class_names, loaded.data_config
    else:  # an exported model: the segmenter its loader gives, with the projection and classes it was trained on
        model = _segmenter(args, args.model)
        class_names = model.class_names
        data_config = SegDataConfig(projection=model.projection, class_names=class_names)
    dataset = RangeDataset(args.data, args.split, data_config)
    result = evaluate(model, dataset, batch_size=args.batch_size, max_frames=args.max_frames, progress=True)
    args.out.mkdir(parents=True, exist_ok=True)
    print("pixels (valid pixels of the range images):")
    print(result.pixels.table())
    plot_confusion(result.pixels.confusion, class_names, args.out / "confusion_pixels.png")
    report = {"checkpoint": str(args.model or args.checkpoint), "data": str(args.data), "frames": len(dataset)
              if args.max_frames is None else min(args.max_frames, len(dataset)), "pixels": result.pixels.as_dict()}
    if result.points is not None:
        print("points (in the field of view; hidden points take their pixel's class):")
        print(result.points.table())
        plot_confusion(result.points.confusion, class_names, args.out / "confusion_points.png")
        report["points"] = result.points.as_dict()
    from squeeze.jsonio import dumps  # strict JSON: an undefined IoU (no labelled point of a class) is null

    atomic_write_text(args.out / "metrics.json", dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / 'metrics.json'} and confusion matrix PNGs")
    return 0


# ------------------------------------------------------------------------------------------------- predict
SCAN_SUFFIXES = (".bin", ".npy", ".pcd")


def _scan_files(inputs: list[Path]) -> list[Path]:
    """The scans of `predict`: files named directly, or found in folders (or in a dataset folder's
    training/velodyne, velodyne, lidar_2d: squeeze.kitti.SCAN_FOLDERS)."""
    from squeeze.kitti import SCAN_FOLDERS, folder_files

    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            files += folder_files(p, SCAN_SUFFIXES, SCAN_FOLDERS)
        elif p.suffix in SCAN_SUFFIXES:
            files.append(p)
        else:
            raise ValueError(f"{p}: expected a .bin, .npy or .pcd file or a folder of them")
    if not files:
        raise ValueError("no .bin, .npy or .pcd files among the inputs")
    return files


def predict_outputs(scan: Path, out: Path) -> list[Path]:
    """The files `seg predict` writes for one input: its labels (.label per point, or (H, W) classes for a .npy
    range image) and its range-image and bird's-eye-view pictures."""
    labels = out / (f"{scan.stem}_classes.npy" if scan.suffix == ".npy" else f"{scan.stem}.label")
    return [labels, out / f"{scan.stem}_range.png", out / f"{scan.stem}_bev.png"]


def ground_truth_labels(scan: Path) -> list[Path]:
    """Where a scan's ground-truth point labels live: beside it (KITTI / simulated velodyne/NNNNNN.label) and, in a
    SemanticKITTI sequence, in ../labels/."""
    beside = [scan.with_suffix(".label")]
    if scan.parent.name == "velodyne":
        beside.append(scan.parent.parent / "labels" / f"{scan.stem}.label")
    return beside


def check_predict_outputs(files: list[Path], out: Path) -> None:
    """Refuse, before anything is written, inputs whose outputs in `out` would overwrite each other (two scans of
    the same name from different folders) or overwrite an input or the ground-truth labels of one (--out onto the
    input folder). DataError naming the files."""
    from squeeze.errors import DataError

    by_name: dict[str, Path] = {}
    for path in files:
        other = by_name.setdefault(path.stem, path)
        if other.resolve() != path.resolve():  # the same file twice (a folder and a file in it) writes the same
            raise DataError(path, f"has the same name as {other}: their outputs in {out} would overwrite each "
                                  "other; predict them into separate --out folders")
    protected = {}
    for path in files:
        protected[path.resolve()] = f"the input {path}"
        protected.update({gt.resolve(): f"the ground-truth labels of {path}" for gt in ground_truth_labels(path)
                          if gt.exists()})
    for path in files:
        for target in predict_outputs(path, out):
            if target.resolve() in protected:
                raise DataError(target, f"writing it would overwrite {protected[target.resolve()]}; choose another "
                                        "--out folder")


def _predict_model_and_inputs(args: argparse.Namespace) -> tuple[Path | None, list[Path]]:
    """(the model file, None for the bundled weights; the input paths) of `predict` (argparse fills the optional
    CHECKPOINT first: squeeze.model_cli.model_and_inputs tells a scan or folder from a checkpoint)."""
    from squeeze.model_cli import model_and_inputs

    return model_and_inputs(args.checkpoint, args.inputs, args.model, SCAN_SUFFIXES)


def _segmenter(args: argparse.Namespace, path: Path | None) -> Any:
    """The segmenter `predict` runs: through the loader the command root gave (checkpoints and exported models),
    else as a checkpoint; the bundled weights when `path` is None."""
    if path is None:  # squeezeseg.predict imports torch: only when the bundled checkpoint is what runs
        from squeeze.model_cli import checkpoint_or_bundled
        from squeezeseg.predict import BUNDLED_NOTE, BUNDLED_WEIGHTS

        path = checkpoint_or_bundled(None, BUNDLED_WEIGHTS, BUNDLED_NOTE)
    load = getattr(args, "load_segmenter", None)
    if load is not None:
        return load(path)
    from squeezeseg.predict import load_model

    return load_model(path).segmenter


def run_predict(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from squeeze.kitti import read_velodyne, write_image, write_point_labels
    from squeeze.pointcloud import read_pcd
    from squeeze.range_image import RangeImage, read_range_npy
    from squeeze.segmentation import points_of_pixels
    from squeeze.vis import bev_picture, range_image_picture
    from squeezeseg.data import SegDataConfig, range_sample_from_array
    from squeezeseg.predict import project_points

    model, inputs = _predict_model_and_inputs(args)
    files = _scan_files(inputs)
    check_predict_outputs(files, args.out)  # before loading anything: nothing is written when it refuses
    segmenter = _segmenter(args, model)
    data_config = SegDataConfig(projection=segmenter.projection)  # project_points reads only the projection
    args.out.mkdir(parents=True, exist_ok=True)
    for path in tqdm(files, desc="predict", unit="scan"):
        points = None
        if path.suffix == ".npy":
            sample = range_sample_from_array(read_range_npy(path, shape=None).to_array(), path.stem)
        else:
            points = read_velodyne(path) if path.suffix == ".bin" else read_pcd(path)
            # Falls back to uniform rows, with a warning, when the points are not stored ring by ring.
            sample = project_points(points, data_config, str(path), args.uniform or path.suffix == ".pcd")
        pixels = segmenter.segment_pixels(sample.raw[None], sample.mask[None])[0]
        classes = pixels.labels
        if points is not None:
            point_classes = points_of_pixels(pixels, sample.pixel_of_point)[0].labels
            write_point_labels(args.out / f"{path.stem}.label", point_classes.astype(np.uint16))
        else:
            np.save(args.out / f"{path.stem}_classes.npy", classes.astype(np.int32), allow_pickle=False)
        image = RangeImage(xyz=sample.raw[..., :3], intensity=sample.raw[..., 3], range=sample.raw[..., 4],
                           mask=sample.mask, point_index=np.full(sample.mask.shape, -1), label=classes)
        write_image(args.out / f"{path.stem}_range.png", range_image_picture(image))
        bev_points = points if points is not None else sample.raw[sample.mask][:, :3]
        bev_classes = point_classes if points is not None else classes[sample.mask]
        write_image(args.out / f"{path.stem}_bev.png", bev_picture(bev_points, point_classes=bev_classes))
    print(f"wrote predictions to {args.out}")
    return 0


# ------------------------------------------------------------------------------------------------- stats
def run_stats(args: argparse.Namespace) -> int:
    from squeezeseg.data import RAW_CHANNELS, RangeDataset, compute_stats, write_stats

    check_max_frames(args.max_frames)
    dataset = RangeDataset(args.data, args.split)
    stats = compute_stats(dataset, max_frames=args.max_frames)
    n = len(dataset) if args.max_frames is None else min(args.max_frames, len(dataset))
    write_stats(args.out, stats, n)
    for name, m, s in zip(RAW_CHANNELS, stats.mean, stats.std, strict=True):
        print(f"{name:<10} mean {m:9.4f}  std {s:9.4f}")
    print(f"wrote {args.out}")
    return 0


# ------------------------------------------------------------------------------------------------- demo
def demo_step(checkpoint: Path, data: Path, out: Path) -> list[Path]:
    """Segment the scans of a labelled folder with a checkpoint; write ground truth and prediction side by side."""
    import cv2
    import numpy as np

    from squeeze.kitti import write_image
    from squeeze.range_image import RangeImage
    from squeeze.vis import range_image_picture, stack_pictures
    from squeezeseg.data import RangeDataset
    from squeezeseg.predict import evaluate, load_model

    loaded = load_model(checkpoint)
    segmenter = loaded.segmenter
    dataset = RangeDataset(data, None, loaded.data_config)
    written = []
    for i in range(len(dataset)):
        s = dataset.sample(i)
        pred = segmenter.segment_pixels(s.raw[None], s.mask[None])[0].labels
        pictures = []
        for title, classes in (("ground truth", s.labels), ("prediction", pred)):
            img = RangeImage(xyz=s.raw[..., :3], intensity=s.raw[..., 3], range=s.raw[..., 4], mask=s.mask,
                             point_index=np.full(s.mask.shape, -1), label=classes)
            pic = range_image_picture(img)[3 * 66:].copy()  # the class half only
            cv2.putText(pic, title, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
            pictures.append(pic)
        written.append(out / f"{s.frame_id}_seg_truth_vs_prediction.png")
        write_image(written[-1], stack_pictures(pictures))
    result = evaluate(loaded.model, dataset)
    print(result.pixels.table())
    return written


def run_export(args: argparse.Namespace) -> int:
    from squeeze.model_cli import export_checkpoint
    from squeezeseg.predict import load_model

    return export_checkpoint(args, load_model)


def run_demo(args: argparse.Namespace) -> int:
    from squeeze.model_cli import checkpoint_or_bundled, print_pictures
    from squeezeseg.predict import BUNDLED_NOTE, BUNDLED_WEIGHTS

    pictures = demo_step(checkpoint_or_bundled(args.checkpoint, BUNDLED_WEIGHTS, BUNDLED_NOTE), args.data, args.out)
    print_pictures(pictures, args.out)
    return 0
