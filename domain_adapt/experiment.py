"""The sim-to-real ablation (`squeeze da run`): each adaptation step alone, then all of them, judged on real scans.

Rows (SqueezeSegV2 unless said; reference/tools.md (b) has the paper's version of this table):

    none          the source scans as simulated
    +profile      measured per-laser intensity and ray drop (domain_adapt.sensor_profile)
    +intensity    intensities from the renderer learned on the target scans (domain_adapt.intensity)
    +ray-drop     returns dropped by the model learned on the target scans (domain_adapt.ray_drop)
    +alignment    geodesic correlation alignment against the target scans (domain_adapt.alignment)
    +calibration  progressive domain calibration on the target scans (domain_adapt.calibration)
    +jitter       laser response jitter in training: per-laser gains and a detection floor drawn for every scan
                  (squeezeseg.data.jitter_laser_response); uses no target scans
    +jitter+calibration  the two together (the bundled model's recipe)
    all           every step above
    SqueezeSeg all  the same, SqueezeSeg (no BatchNorm: calibration has nothing to do)

Budget: the paper trains each row from scratch; two CPU cores cannot (one SqueezeSegV2 takes ~55 min). Every row
here starts from the same source-trained weights (`--init`, the bundled sim model by default) and fine-tunes
for the same number of updates on its own data and loss, so rows differ only by their step (a step budget, not a
time budget: on a shared machine a time budget gave one row half the updates of another). The target scans
serve, without labels, for the profile, the renderer, the ray-drop model, the alignment and the calibration;
the labelled evaluation set is separate (say when it is the same scans). Outputs: table.md, results.json and
ablation.png (per-class IoU per row) in the output folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    name: str
    model: str = "squeezeseg_v2_kitti"
    profile: bool = False
    intensity: bool = False
    ray_drop: bool = False
    alignment: bool = False
    calibration: bool = False
    response_jitter: bool = False


ROWS = (
    Row("none"),
    Row("+profile", profile=True),
    Row("+intensity", intensity=True),
    Row("+ray-drop", ray_drop=True),
    Row("+alignment", alignment=True),
    Row("+calibration", calibration=True),
    Row("+jitter", response_jitter=True),
    Row("+jitter+calibration", calibration=True, response_jitter=True),
    Row("all", profile=True, intensity=True, ray_drop=True, alignment=True, calibration=True, response_jitter=True),
    Row("SqueezeSeg all", model="squeezeseg_kitti", profile=True, intensity=True, ray_drop=True, alignment=True,
        response_jitter=True),
)
ROW_NAMES = tuple(r.name for r in ROWS)


@dataclass(frozen=True)
class ExperimentConfig:
    steps_per_row: int = 500  # fine-tuning updates of each row (batch_size scans each)
    source_frames: int | None = 400  # source frames transformed and trained on (None: all)
    # Target scans the sensor profile, intensity renderer and ray-drop model learn from, evenly spaced over the folder
    # by name (None: all). A whole real data set does not fit in memory as ring images (SqueezeSeg's 10,848 scans:
    # ~60 GB), and a few hundred spread over it say what all would. Calibration takes 200 of its own
    # (train.calibrate_on_target); the alignment draws its batches from every target scan.
    target_frames: int | None = 200
    renderer_steps: int = 400  # intensity renderer training steps
    renderer_width: int = 16  # channels of the renderer's first stage (bench_da_intensity's setting)
    renderer_rings: int = 64  # the renderer's per-ring bias (IntensityNetConfig.rings; 0 = none, as the tables ran)
    align_weight: float = 1.0  # weight of the correlation-alignment loss
    batch_size: int = 4
    lr: float = 5e-4
    threads: int = 2
    pose_jitter: tuple[float, float] = (0.0, 0.0)  # training augmentation (squeezeseg.data.SegDataConfig)
    # (gain, floor) of the laser response jitter in the rows that use it (SegDataConfig.intensity_jitter). The
    # spread of KITTI's lasers: ring medians 0.13-0.37 (a gain of about 2 either way) and 2-37% zeros per ring
    # (sensor_profile on kitti_mini), where the simulated road's lowest decile reads under 0.11.
    intensity_jitter: tuple[float, float] = (2.0, 0.15)
    bf16: bool = True  # bfloat16 autocast in training (domain_adapt.train.fine_tune_config)
    seed: int = 0


@dataclass
class RowResult:
    row: str
    iou: dict[str, float]  # per class, on the labelled real set
    steps: int
    seconds: float
    checkpoint: str
    source_iou: dict[str, float] | None = None  # per class, on held-out source scans as simulated (if given)


def _realism(target_scans, config: ExperimentConfig, out: Path, need: set[str]):
    """The target-learned pieces the rows need: sensor profile, intensity renderer, ray-drop model."""
    from domain_adapt.intensity import (
        IntensityNetConfig,
        checkpoint_dict,
        held_out_error,
        ring_images,
        train_renderer,
    )
    from domain_adapt.ray_drop import fit_ray_drop, training_cells
    from domain_adapt.sensor_profile import calibrate_sensor, plot_profile, write_profile

    pieces: dict = {}
    if "profile" in need:
        pieces["profile"] = calibrate_sensor(target_scans, source="target")
        write_profile(out / "sensor_profile.json", pieces["profile"])
        plot_profile(pieces["profile"], out / "sensor_profile.png")
    if "intensity" in need:
        import torch

        images = ring_images(target_scans)
        train = images[:-1] if len(images) > 1 else images
        net, _ = train_renderer(train, steps=config.renderer_steps, seed=config.seed, progress=True,
                                config=IntensityNetConfig(width=config.renderer_width,
                                                           rings=config.renderer_rings))
        metrics = held_out_error(net, train, images[-1]) | {"held_out": len(images) > 1}
        log.info("intensity renderer: held-out MAE %.4f (training-mean baseline %.4f)",
                 metrics["held_out_mae"], metrics["mean_baseline_mae"])
        torch.save(checkpoint_dict(net, "target", config.renderer_steps, metrics), out / "intensity_renderer.pt")
        pieces["renderer"], pieces["renderer_metrics"] = net, metrics
    if "ray_drop" in need:
        model = fit_ray_drop(*training_cells(target_scans))
        (out / "ray_drop.json").write_text(json.dumps(model.to_dict()) + "\n")
        pieces["ray_drop"] = model
    return pieces


def run_experiment(source: Path, target: Path, evaluation: Path, out: Path, rows: tuple[str, ...] = ROW_NAMES,
                   init: Path | None = None, config: ExperimentConfig | None = None,
                   source_eval: Path | None = None) -> list[RowResult]:
    """Run the ablation rows; write table.md, results.json and ablation.png into `out`; return the results.
    `source_eval`: labelled simulated scans held out from training; each row is also scored there, untransformed,
    to show what adaptation costs on the source domain."""
    import torch

    from domain_adapt.readers import find_scans, read_scan, spread_files
    from domain_adapt.train import SourceTransform, fine_tune_config, target_dataset, train_adapted, transform_source
    from squeeze.config import named_config
    from squeezeseg.data import RangeDataset, SegDataConfig
    from squeezeseg.models import MODELS
    from squeezeseg.predict import evaluate, load_model

    config = config or ExperimentConfig()
    chosen = [r for r in ROWS if r.name in rows]
    unknown = set(rows) - set(ROW_NAMES)
    if unknown:
        raise ValueError(f"unknown ablation row(s) {sorted(unknown)}; choose from {', '.join(ROW_NAMES)}")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    files = find_scans(target)
    target_scans = [read_scan(f) for f in spread_files(files, config.target_frames)]
    need = {k for r in chosen for k in ("profile", "intensity", "ray_drop") if getattr(r, k)}
    pieces = _realism(target_scans, config, out, need)

    results: list[RowResult] = []
    for row in chosen:
        started = time.perf_counter()
        if init is not None and row.model == "squeezeseg_v2_kitti":
            loaded = load_model(init)
            model_config, data_config = loaded.model_config, loaded.data_config
            start_state = loaded.model.state_dict()
        else:
            model_config = named_config(MODELS, row.model, use_crf=False)
            data_config = SegDataConfig(class_names=model_config.class_names)
            start_state = None
        data_config = dataclasses.replace(data_config, flip=True, seed=config.seed, pose_jitter=config.pose_jitter,
                                          intensity_jitter=config.intensity_jitter if row.response_jitter
                                          else (1.0, 0.0))
        source_set = RangeDataset(source, None, data_config)
        if config.source_frames is not None and config.source_frames < len(source_set):
            source_set.source.frame_ids = source_set.source.frame_ids[: config.source_frames]
        transform = SourceTransform(ray_drop=pieces.get("ray_drop") if row.ray_drop else None,
                                    renderer=pieces.get("renderer") if row.intensity else None,
                                    profile=pieces.get("profile") if row.profile else None)
        row_dir = out / row_folder(row.name)
        data_dir = out / "source" / transform.name
        if not (data_dir / "ImageSet" / "all.txt").exists():
            transform_source(source_set, data_dir, transform, seed=config.seed, progress=True)
        train_set = RangeDataset(data_dir, None, data_config, train=True)
        target_set = target_dataset(target, data_config) if (row.alignment or row.calibration) else None
        train_config = fine_tune_config(config.steps_per_row, config.batch_size, config.lr, config.seed,
                                        config.bf16)
        run = train_adapted(row.model, model_config, data_config, train_set, target_set, row_dir, train_config,
                            align_weight=config.align_weight if row.alignment else 0.0,
                            calibrate=row.calibration, init_state=start_state)
        eval_set = RangeDataset(evaluation, None, dataclasses.replace(data_config, flip=False))
        metrics = evaluate(run.model, eval_set)
        iou = _class_iou(metrics)
        source_iou = None
        if source_eval is not None:
            source_iou = _class_iou(evaluate(run.model, RangeDataset(source_eval, None,
                                                                     dataclasses.replace(data_config, flip=False))))
        results.append(RowResult(row.name, iou, run.steps, time.perf_counter() - started, str(run.checkpoint),
                                 source_iou))
        log.info("%s: %s", row.name, ", ".join(f"{k} {v:.3f}" for k, v in iou.items()))
        write_results(out, results, pieces.get("renderer_metrics"), source, target, evaluation)
    return results


def row_folder(name: str) -> str:
    """A row's folder name: "+calibration" -> plus_calibration, "+jitter+calibration" ->
    plus_jitter_plus_calibration, "SqueezeSeg all" -> SqueezeSeg_all."""
    return name.replace(" ", "_").replace("+", "_plus_").strip("_")


def _class_iou(metrics) -> dict[str, float]:
    """Per-class IoU of a squeezeseg.predict.evaluate result, background left out."""
    return {name: float(metrics.pixels.iou[k]) for k, name in enumerate(metrics.pixels.class_names) if k}


def write_results(out: Path, results: list[RowResult], renderer_metrics: dict | None, source: Path, target: Path,
                  evaluation: Path) -> None:
    """table.md, results.json, ablation.png."""
    import numpy as np  # here, not at the top: `squeeze --help` reads ExperimentConfig and imports nothing heavy

    classes = list(results[0].iou) if results else []
    lines = [f"Sim-to-real ablation: source {source}, unlabelled target {target}, evaluated on {evaluation}"
             + (" (the target scans themselves)" if Path(target).resolve() == Path(evaluation).resolve() else ""),
             "", "| row | " + " | ".join(f"{c} IoU" for c in classes) + " | steps | minutes |",
             "|---|" + "---|" * (len(classes) + 2)]
    for r in results:
        cells = " | ".join("-" if not np.isfinite(v) else f"{v:.3f}" for v in r.iou.values())
        lines.append(f"| {r.row} | {cells} | {r.steps} | {r.seconds / 60:.1f} |")
    scored = [r for r in results if r.source_iou]
    if scored:
        lines += ["", "The same rows on held-out simulated scans, as simulated (what adaptation costs on the source):",
                  "", "| row | " + " | ".join(f"{c} IoU" for c in classes) + " |", "|---|" + "---|" * len(classes)]
        lines += [f"| {r.row} | " + " | ".join(f"{v:.3f}" for v in r.source_iou.values()) + " |" for r in scored]
    if renderer_metrics:
        lines += ["", f"Intensity renderer on a held-out target scan: MAE {renderer_metrics['held_out_mae']:.4f} "
                      f"against {renderer_metrics['mean_baseline_mae']:.4f} for the training mean "
                      f"(ratio {renderer_metrics['held_out_mae'] / renderer_metrics['mean_baseline_mae']:.2f}"
                      + (f"; predicting each return by its same-ring neighbours' real intensity, an oracle: "
                         f"{renderer_metrics['ring_neighbour_ratio']:.2f}" if "ring_neighbour_ratio" in renderer_metrics
                         else "") + ")."]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"rows": [dataclasses.asdict(r) for r in results],
                                                  "renderer": renderer_metrics}, indent=1) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(results) + 2), 4), dpi=100)
    width = 0.8 / max(len(classes), 1)
    x = np.arange(len(results))
    from squeeze.classes import color_of

    for j, c in enumerate(classes):
        values = [r.iou[c] if np.isfinite(r.iou[c]) else 0.0 for r in results]
        ax.bar(x + (j - (len(classes) - 1) / 2) * width, values, width, label=c,
               color=np.array(color_of(c)) / 255.0)
    ax.set_xticks(x, [r.row for r in results], rotation=20, ha="right")
    ax.set_ylabel("IoU on real scans")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("sim-to-real ablation")
    fig.tight_layout()
    fig.savefig(out / "ablation.png")
    plt.close(fig)
