"""`squeeze det train|eval|predict|anchors|export|demo`: camera object detection with SqueezeDet and SqueezeDet+."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("squeeze.det")

DEMO_SCORE = 0.4  # the reference's PLOT_PROB_THRESH: boxes drawn in pictures; result files keep every survivor
NMS_HELP = ("per-class NMS: standard greedy (default), the reference's (suppressed boxes still suppress), or soft "
            "(Gaussian Soft-NMS, sigma 0.5: overlapping boxes are rescored, not removed)")

# The keys of squeezedet.models.MODELS, spelled out so that --help needs no torch (tests/test_cli.py keeps them equal).
MODEL_NAMES = ("squeezedet_kitti", "squeezedet_plus_kitti")


def add_det_parser(subparsers, load_detector: Callable[..., Any] | None = None) -> None:
    """Register `squeeze det ...`. load_detector(path, nms=, final_threshold=) -> squeeze.predictor.Detector is how
    `predict` loads its model: the command root passes one that also reads exported models (.onnx, OpenVINO .xml,
    TensorRT .engine: squeeze_suite.predictors); without it `predict` takes checkpoints only."""
    from squeeze.model_cli import add_export_parser
    from squeeze.train_cli import add_train_arguments

    det = subparsers.add_parser("det", help="camera object detection: SqueezeDet, SqueezeDet+",
                                description="Train, evaluate and run SqueezeDet / SqueezeDet+ on KITTI-format image "
                                            "folders (image_2 + label_2), and compute anchor shapes.")
    sub = det.add_subparsers(dest="det_command", metavar="DET_COMMAND")

    p = sub.add_parser("train", help="train a detector",
                       description="Train on a KITTI object folder (training/image_2 + label_2). Evaluates on --val "
                                   "every --eval-every steps with the KITTI protocol, keeps best.pt by Car AP "
                                   "(moderate, 11-point), writes metrics.csv and a learning-curve PNG into --out. "
                                   "Resume with --resume.")
    p.add_argument("data", type=Path, help="training folder (KITTI object layout)")
    p.add_argument("--val", type=Path, help="validation folder (default: none)")
    p.add_argument("--split", default=None, help="training ImageSets list name, e.g. train (default: every frame)")
    p.add_argument("--val-split", default=None, help="validation ImageSets list name (default: every frame)")
    p.add_argument("--model", choices=MODEL_NAMES, default="squeezedet_kitti", help="named model config")
    p.add_argument("--pretrained", type=Path, default=None, metavar="PTH",
                   help="torchvision SqueezeNet state_dict for the trunk (squeezenet1_1 for SqueezeDet, squeezenet1_0 "
                        "for SqueezeDet+); 'download' fetches torchvision's (needs network access)")
    p.add_argument("--anchors", type=Path, default=None, help="anchor-shape file from `squeeze det anchors`")
    p.add_argument("--init", type=Path, default=None, metavar="CKPT",
                   help="start from the weights of a detection checkpoint: same backbone, classes, anchor count and "
                        "batch_norm setting, any input size (e.g. a run at half size, to go on at full size; give "
                        "both runs the same --anchors file). Not a resume: new optimiser and schedule")
    p.add_argument("--cache-images", action="store_true",
                   help="keep decoded training images in memory (about 1.4 MB per KITTI frame); saves the PNG "
                        "decoding, the larger part of preparing a sample")
    add_train_arguments(p, steps=50_000, batch_size=20)
    p.add_argument("--no-flip", action="store_true", help="no left-right flip augmentation")
    p.add_argument("--drift", type=int, nargs=2, default=(150, 100), metavar=("DX", "DY"),
                   help="max random translation in pixels (default: 150 100, the reference's)")
    p.set_defaults(run=run_train)

    p = sub.add_parser("eval", help="KITTI 2D evaluation: of result folders, or of a checkpoint on a folder",
                       description="KITTI 2D object evaluation, equal to the official devkit's evaluate_object: "
                                   "Easy/Moderate/Hard, 11- and 40-point AP, AOS when results carry alpha. Either "
                                   "--results DIR (result .txt files, 16 fields) against DATA's label_2, or a "
                                   "detector (CKPT, --model FILE, else the bundled SqueezeDet), which runs on DATA's "
                                   "images first. Prints the table; writes metrics.json and precision-recall curves "
                                   "(PNG) into --out.")
    p.add_argument("checkpoint_arg", type=Path, nargs="?", default=None, metavar="CKPT",
                   help="detector checkpoint to run on DATA's images, as --checkpoint (default: the bundled "
                        "SqueezeDet trained on the simulated world, when neither --results nor --model is given)")
    p.add_argument("data", type=Path, help="KITTI object folder with training/label_2 (or a label_2 folder itself)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--results", type=Path, help="result folder: <frame>.txt files, or a data/ folder of them")
    src.add_argument("--checkpoint", type=Path, help="detector checkpoint to run on DATA's images (or CKPT)")
    src.add_argument("--model", type=Path, metavar="FILE",
                     help="exported detector to run on DATA's images instead: .onnx, .xml (OpenVINO IR), .engine")
    p.add_argument("--split", default=None, help="ImageSets list name (default: every labelled frame)")
    p.add_argument("--out", type=Path, required=True, help="folder for metrics.json, pr_curves.png (and results)")
    p.add_argument("--classes", nargs="+", default=["Car", "Pedestrian", "Cyclist"], help="object types evaluated")
    p.add_argument("--squeezedet-devkit", action="store_true",
                   help="squeezeDet's copy of the devkit: detections shorter than the height limit are not ignored")
    p.add_argument("--nms", choices=["standard", "reference", "soft"], default=None,
                   help="with --checkpoint or --model: " + NMS_HELP + " (default: the model's)")
    p.set_defaults(run=run_eval, load_detector=load_detector)

    p = sub.add_parser("predict", help="detect objects in images: KITTI result files and drawn pictures",
                       description="Run a detector on image files or folders. Writes OUT/data/<name>.txt in KITTI "
                                   "result format (16 fields, boxes at the original image size, every detection "
                                   "after NMS) and OUT/images/<name>.png with the boxes scoring >= --draw-threshold.")
    p.add_argument("checkpoint", type=Path, nargs="?", default=None,
                   help="detector checkpoint, or an exported model as with --model (default: the bundled "
                        "SqueezeDet trained on the simulated world)")
    p.add_argument("--model", type=Path, default=None, metavar="FILE",
                   help="an exported model instead of the checkpoint: .onnx (onnxruntime), .xml (OpenVINO IR) or "
                        ".engine (TensorRT), with its .json sidecar beside it (squeeze deploy export); no torch")
    p.add_argument("inputs", type=Path, nargs="*", default=[],
                   help="image files or folders of them (a dataset folder: its training/image_2 or image_2)")
    p.add_argument("--inputs", type=Path, nargs="+", default=[], dest="more_inputs", metavar="INPUT",
                   help="more images or folders, as the positional inputs")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threshold", type=float, default=None,
                   help="drop detections scoring at or below this from the result files (default: keep all)")
    p.add_argument("--draw-threshold", type=float, default=DEMO_SCORE, help="min score of drawn boxes")
    p.add_argument("--nms", choices=["standard", "reference", "soft"], default=None,
                   help=NMS_HELP)
    p.add_argument("--labels", type=Path, default=None, help="label_2 folder: draw ground truth too (thin white)")
    p.set_defaults(run=run_predict, load_detector=load_detector)

    p = sub.add_parser("anchors", help="anchor shapes by k-means (IoU distance) over a label folder",
                       description="Cluster the labelled box shapes of a KITTI folder into K anchor shapes with the "
                                   "distance 1 - IoU (boxes on a common centre), measured in pixels of the net input, "
                                   "and write an anchor file that `squeeze det train --anchors` reads.")
    p.add_argument("data", type=Path, help="KITTI object folder (training/label_2, training/image_2)")
    p.add_argument("-k", type=int, default=9, help="number of anchor shapes (default: 9)")
    p.add_argument("--out", type=Path, required=True, help="anchor file to write (JSON)")
    p.add_argument("--image-size", type=int, nargs=2, default=(1248, 384), metavar=("W", "H"),
                   help="net input size the shapes are measured at (default: 1248 384)")
    p.add_argument("--classes", nargs="+", default=["Car", "Pedestrian", "Cyclist"], help="object types used")
    p.add_argument("--min-height", type=float, default=0.0, metavar="PX",
                   help="leave out boxes lower than this in image pixels (KITTI evaluates >= 25; default: keep all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the k-means++ starts")
    p.set_defaults(run=run_anchors)

    add_export_parser(sub, "detection", "last.pt, best.pt, folded.pt", run_export)

    p = sub.add_parser("demo", help="detect objects in the images of a labelled folder and draw them",
                       description="Run the detector on the camera images of a labelled KITTI folder (for new "
                                   "simulated frames: `squeeze sim --out DIR --frames 3 --seed 321`), write pictures "
                                   "with detections and ground truth, and print per frame the labelled objects found; "
                                   "`squeeze demo` does both steps.")
    p.add_argument("data", type=Path, help="KITTI object folder (training/image_2 + label_2)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint (default: the bundled SqueezeDet trained on the simulated world)")
    p.add_argument("--out", type=Path, default=Path("outputs/det_demo"), help="folder for the pictures")
    p.set_defaults(run=run_demo)
    add_split_parser(sub)
    det.set_defaults(run=lambda args: det.print_help() or 2)


# ------------------------------------------------------------------------------------------------- train
def run_train(args: argparse.Namespace) -> int:
    import torch

    from squeeze.train_cli import check_batch_size, model_overrides, train_config_from_args
    from squeezedet.models import MODELS
    from squeezedet.train import detector_run, train_detector

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.pretrained is not None and args.init is not None:
        raise ValueError("--pretrained and --init both set the starting weights; give one")
    overrides = model_overrides(args, MODELS[args.model][0]())  # the chosen config types the --set values
    run = detector_run(args.data, model=args.model, overrides=overrides, val=args.val, split=args.split,
                       val_split=args.val_split, anchors=args.anchors,
                       scratch=args.pretrained is None and args.init is None, flip=not args.no_flip,
                       drift=tuple(args.drift), seed=args.seed, cache_images=args.cache_images)
    check_batch_size(len(run.train_set), args.batch_size, args.data)  # names the flag to pass
    pretrained = None if args.pretrained is None else _pretrained_file(args.pretrained, run.model_config.backbone.name)
    trained = train_detector(run, args.out, train_config_from_args(args), pretrained=pretrained, init=args.init,
                             val_frames=args.val_frames, resume=args.resume)
    result = trained.result
    if trained.folded is not None:
        print(f"BatchNorm folded into the convs: plain {args.model} in {args.out / 'folded.pt'} (from the last step)")
    print(f"done: {result.step} steps; last {result.last_checkpoint}; best {result.best_checkpoint} "
          f"({result.best_value}); curve {trained.learning_curve}")
    return 0


# torchvision's ImageNet SqueezeNet weights; the hex in each name is the start of the file's SHA-256, which
# torch.hub checks after the download.
TORCHVISION_SQUEEZENET_URLS = {
    "squeezedet": "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
    "squeezedet_plus": "https://download.pytorch.org/models/squeezenet1_0-b66bff10.pth",
}


def _pretrained_file(spec: Path, backbone: str) -> Path:
    """The state_dict file to load: the given path, or torchvision's weights fetched by torch.hub for 'download'."""
    if str(spec) != "download":
        return spec
    import torch

    url = TORCHVISION_SQUEEZENET_URLS[backbone]
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(path), hash_prefix=path.stem.rsplit("-", 1)[1], progress=True)
        except Exception as e:  # no network, proxy, certificate: say so plainly
            raise ValueError(f"could not download {url} ({e.__class__.__name__}: {e}); without network access, "
                             f"copy that file here and pass --pretrained PATH") from None
    return path


# ------------------------------------------------------------------------------------------------- eval
def _label_dir(data: Path) -> Path:
    for candidate in (data / "training" / "label_2", data / "label_2", data):
        if candidate.is_dir() and any(candidate.glob("*.txt")):
            return candidate
    from squeeze.errors import DataError

    raise DataError(data, "no label_2 folder with .txt files (looked in training/label_2, label_2 and the folder)")


def run_eval(args: argparse.Namespace) -> int:
    from squeeze.atomic import atomic_write_text
    from squeeze.jsonio import dumps
    from squeezedet.kitti_eval import evaluate_folders, format_table, plot_pr_curves

    if args.checkpoint_arg is not None:
        if args.results is not None or args.checkpoint is not None or args.model is not None:
            raise ValueError(f"{args.checkpoint_arg}: give one of a checkpoint, --checkpoint, --model or --results")
        args.checkpoint = args.checkpoint_arg
    elif args.results is None and args.checkpoint is None and args.model is None:
        from squeeze.model_cli import checkpoint_or_bundled
        from squeezedet.predict import BUNDLED_NOTE, BUNDLED_WEIGHTS

        args.checkpoint = checkpoint_or_bundled(None, BUNDLED_WEIGHTS, BUNDLED_NOTE)
    args.out.mkdir(parents=True, exist_ok=True)
    frame_ids = None
    if args.split:
        from squeeze.kitti import KittiObjectFolder

        frame_ids = KittiObjectFolder(args.data, image_set=args.split).frame_ids
    results = args.results
    if args.checkpoint is not None:
        from squeezedet.data import DetectionDataset
        from squeezedet.predict import load_model, predict_dataset

        loaded = load_model(args.checkpoint, **({} if args.nms is None else {"nms": args.nms}))
        dataset = DetectionDataset(args.data, args.split, loaded.data_config)
        ids, dets = predict_dataset(loaded.model, dataset, progress=True)
        results = args.out / "data"
        _write_results(results, ids, dets)
        frame_ids = ids
    elif args.model is not None:  # an exported model: frame by frame through the Detector protocol
        from tqdm import tqdm

        from squeeze.kitti import read_image
        from squeezedet.data import DetectionDataset
        from squeezedet.predict import detections_to_labels

        detector = _detector(args, nms=args.nms)
        dataset = DetectionDataset(args.data, args.split)
        ids = list(dataset.frame_ids)
        dets = [detections_to_labels(detector.detect(read_image(dataset.folder.path("image_2", f))),
                                     detector.class_names) for f in tqdm(ids, desc="detect", unit="image")]
        results = args.out / "data"
        _write_results(results, ids, dets)
        frame_ids = ids
    result = evaluate_folders(_label_dir(args.data), results, frame_ids, classes=tuple(args.classes),
                              ignore_short_detections=not args.squeezedet_devkit)
    print(format_table(result), end="")
    plot_pr_curves(result, args.out / "pr_curves.png")
    # null where the devkit's AP is undefined (NaN: every detection above a threshold ignored); `warnings` names
    # each class and difficulty whose AP rests on fewer than 41 objects.
    doc = {"ap11": result.ap11, "ap40": result.ap40, "aos11": result.aos11, "aos40": result.aos40,
           "num_gt": {c: list(v) for c, v in result.num_gt.items()}, "frames": result.num_frames,
           "devkit": result.devkit, "warnings": result.few_gt_warnings()}
    atomic_write_text(args.out / "metrics.json", dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out / 'metrics.json'} and {args.out / 'pr_curves.png'}")
    return 0


def _write_results(folder: Path, frame_ids, detections) -> None:
    from squeeze.kitti import write_labels

    folder.mkdir(parents=True, exist_ok=True)
    for fid, det in zip(frame_ids, detections, strict=True):
        write_labels(folder / f"{fid}.txt", det)


# ------------------------------------------------------------------------------------------------- predict
def _detector(args: argparse.Namespace, **overrides) -> Any:
    """The Detector `predict` runs: --model or the checkpoint (not both), through the loader the command root gave
    (checkpoints and exported models), else as a checkpoint; the bundled weights when neither is given."""
    if args.model is not None and getattr(args, "checkpoint", None) is not None:
        raise ValueError("give the checkpoint or --model, not both")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    path = args.model if args.model is not None else args.checkpoint
    load = getattr(args, "load_detector", None)
    if path is not None and load is not None:
        return load(path, **overrides)
    from squeeze.model_cli import checkpoint_or_bundled
    from squeezedet.predict import BUNDLED_NOTE, BUNDLED_WEIGHTS, load_model

    return load_model(checkpoint_or_bundled(path, BUNDLED_WEIGHTS, BUNDLED_NOTE), **overrides).detector


def run_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from squeeze.kitti import IMAGE_SUFFIXES, read_image, read_labels, write_image
    from squeeze.model_cli import model_and_inputs
    from squeezedet.predict import detections_to_labels, draw_detections, image_files

    checkpoint, inputs = model_and_inputs(args.checkpoint, [*args.inputs, *args.more_inputs], None, IMAGE_SUFFIXES)
    if not inputs:
        raise ValueError("give the images to detect on (files or folders) after the checkpoint")
    args.checkpoint = checkpoint
    detector = _detector(args, nms=args.nms, final_threshold=args.threshold)
    files = image_files(inputs)
    names = [f.stem for f in files]
    if len(set(names)) != len(names):
        raise ValueError("two inputs share a file name; predict them into separate --out folders")
    for path in tqdm(files, desc="detect", unit="image"):
        image = read_image(path)
        det = detections_to_labels(detector.detect(image), detector.class_names)
        _write_results(args.out / "data", [path.stem], [det])
        gt = None
        if args.labels is not None and (args.labels / f"{path.stem}.txt").exists():
            gt = read_labels(args.labels / f"{path.stem}.txt")
        picture = draw_detections(image, det, gt, args.draw_threshold)
        write_image(args.out / "images" / f"{path.stem}.png", picture)
    print(f"wrote {len(files)} result file(s) to {args.out / 'data'} and pictures to {args.out / 'images'}")
    return 0


# ------------------------------------------------------------------------------------------------- anchors
def run_anchors(args: argparse.Namespace) -> int:
    import numpy as np

    from squeeze.errors import DataError
    from squeezedet.anchors import box_shapes, kmeans_anchor_shapes, write_anchor_file

    root = args.data / "training" if (args.data / "training").is_dir() else args.data
    image_dir = root / "image_2" if (root / "image_2").is_dir() else None
    if image_dir is None:
        log.warning("no image_2 folder: assuming KITTI's 1242 x 375 images to scale the boxes")
    size = (int(args.image_size[0]), int(args.image_size[1]))
    shapes = box_shapes(root / "label_2", image_dir, size, args.classes, args.min_height)
    distinct = len(np.unique(shapes, axis=0))
    if distinct < args.k:  # k-means needs at least k different shapes; say which flag to change
        raise DataError(root / "label_2", f"{distinct} distinct box shapes ({len(shapes)} boxes) cannot make "
                                          f"{args.k} anchor shapes; pass -k {distinct} or fewer")
    centres, mean_iou = kmeans_anchor_shapes(shapes, args.k, seed=args.seed)
    meta = {"k": args.k, "mean_iou": round(mean_iou, 4), "boxes": len(shapes), "classes": list(args.classes),
            "min_height": args.min_height, "source": str(args.data), "seed": args.seed}
    write_anchor_file(args.out, centres, size, meta=meta)
    for w, h in centres:
        print(f"  {w:7.1f} x {h:6.1f}")
    print(f"{args.k} anchor shapes from {len(shapes)} boxes, mean best IoU {mean_iou:.3f}; wrote {args.out}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from squeeze.model_cli import export_checkpoint
    from squeezedet.predict import load_model

    return export_checkpoint(args, load_model)


# ------------------------------------------------------------------------------------------------- demo
def demo_step(checkpoint: Path, data: Path, out: Path) -> list[Path]:
    """Detect objects in the camera images of a labelled KITTI folder and draw them; the picture paths.

    Prints, per frame and class, how many labelled objects a drawn detection (score >= 0.4) finds at the KITTI
    overlap (0.7 for cars, 0.5 otherwise). AP is not printed: over a few frames the devkit's AP is mostly its
    sampling quirk (tests/test_det_cli.py), not the detector.
    """
    import numpy as np

    from squeeze.geometry import iou_2d
    from squeeze.kitti import KittiObjectFolder, read_image, read_labels, write_image
    from squeezedet.predict import detections_to_labels, draw_detections, load_model

    loaded = load_model(checkpoint)
    detector = loaded.detector
    folder = KittiObjectFolder(data)
    pictures = []
    for fid in folder.frame_ids:
        image_path = folder.path("image_2", fid)
        image = read_image(image_path)
        det = detections_to_labels(detector.detect(image), detector.class_names)
        gt = read_labels(folder.path("label_2", fid))
        path = out / f"det_{image_path.stem}.png"
        write_image(path, draw_detections(image, det, gt, DEMO_SCORE))
        pictures.append(path)
        found = []
        for c in loaded.model_config.class_names:
            truth = gt.bbox[gt.type == c]
            boxes = det.bbox[(det.type == c) & (det.score >= DEMO_SCORE)]
            overlap = 0.7 if c == "Car" else 0.5
            hits = int((iou_2d(truth, boxes) > overlap).any(axis=1).sum()) if len(truth) and len(boxes) else 0
            found.append(f"{c} {hits}/{len(truth)}")
        drawn = int(np.sum(det.score >= DEMO_SCORE)) if len(det) else 0
        print(f"  frame {image_path.stem}: {drawn} detections >= {DEMO_SCORE}; labelled objects found: "
              + ", ".join(found))
    return pictures


def run_demo(args: argparse.Namespace) -> int:
    from squeeze.model_cli import checkpoint_or_bundled, print_pictures
    from squeezedet.predict import BUNDLED_NOTE, BUNDLED_WEIGHTS

    pictures = demo_step(checkpoint_or_bundled(args.checkpoint, BUNDLED_WEIGHTS, BUNDLED_NOTE), args.data, args.out)
    print_pictures(pictures, args.out)
    return 0


# ------------------------------------------------------------------------------------------------- split
def add_split_parser(sub) -> None:
    """Register `squeeze det split` on the det sub-parsers."""
    p = sub.add_parser("split", help="write a seeded train/val split as ImageSets lists",
                       description="Write ROOT/ImageSets/{train,val,trainval}.txt (sorted frame ids) for a KITTI "
                                   "object folder: a random split that the same --seed rebuilds byte for byte on "
                                   "any machine, or the split of two given lists (e.g. the 3DOP train/val lists "
                                   "most KITTI papers use: 3,712 / 3,769 frames), checked against training/image_2. "
                                   "Existing lists with other ids are kept unless --force.")
    p.add_argument("root", type=Path, help="KITTI object folder (ROOT/training/image_2)")
    p.add_argument("--val-fraction", type=float, default=0.5,
                   help="share of the frames drawn for val, rounded half up (SqueezeDet's split: 0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random split")
    p.add_argument("--lists", type=Path, nargs=2, default=None, metavar=("TRAIN", "VAL"),
                   help="take the split from these two list files (one frame id a line) instead of drawing one")
    p.add_argument("--force", action="store_true", help="overwrite existing ImageSets lists with other ids")
    p.set_defaults(run=run_split)


def run_split(args: argparse.Namespace) -> int:
    from squeeze.splits import image_frame_ids, random_split, split_from_lists, write_split

    available = image_frame_ids(args.root)
    if args.lists is not None:
        split = split_from_lists(args.lists[0], args.lists[1], available)
        source = f"the lists {args.lists[0]} and {args.lists[1]}"
    else:
        split = random_split(available, args.val_fraction, args.seed)
        source = f"val fraction {args.val_fraction}, seed {args.seed}"
    paths = write_split(args.root, split, force=args.force)
    unused = len(available) - len(split.trainval)
    print(f"split of {len(available)} frames ({source}): train {len(split.train)}, val {len(split.val)}, "
          f"trainval {len(split.trainval)}" + (f"; {unused} frame(s) in neither list" if unused else ""))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
