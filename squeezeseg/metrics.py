"""Segmentation metrics as SqueezeSeg defines them (reference/models.md 2.6).

Per class, TP / FP / FN are summed over the whole set (not averaged per frame), on valid pixels only;
IoU = TP / (TP + FP + FN), precision = TP / (TP + FP), recall = TP / (TP + FN). Everything follows from one
confusion matrix, accumulated frame by frame.

Classes without ground truth. A class with no labelled pixel in the evaluated set has no IoU: it is undefined
(NaN here, null in JSON, "-" in the table) and left out of the mean IoU, whether or not the model predicted it.
Counting it as 0 when it was predicted made mIoU jump by a third (with three classes) because of one stray
pixel, and its false positives are still reported: its precision is 0 (FP only), and each of them is a missed
pixel (FN) of the class it belongs to. SqueezeSeg's KITTI validation set holds every class, so its numbers are
unchanged. With no labelled pixel of any non-background class (or no frames), mIoU itself is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int, valid: np.ndarray | None = None
                     ) -> np.ndarray:
    """(K, K) int64 counts, rows = ground truth, columns = prediction, over `valid` elements.

    pred, target: integer arrays of one shape (pixels or points); classes outside [0, K) raise ValueError.
    """
    pred = np.asarray(pred).ravel()
    target = np.asarray(target).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in size")
    if valid is not None:
        keep = np.asarray(valid).ravel().astype(bool)
        pred, target = pred[keep], target[keep]
    for name, a in (("prediction", pred), ("target", target)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} holds class ids outside [0, {num_classes})")
    return np.bincount(target.astype(np.int64) * num_classes + pred.astype(np.int64),
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass
class SegMetrics:
    """Per-class metrics of a confusion matrix. Arrays (K,) float64; NaN where undefined: IoU and recall of a
    class with no ground-truth pixel, precision of a class never predicted."""

    class_names: tuple[str, ...]
    confusion: np.ndarray
    iou: np.ndarray
    precision: np.ndarray
    recall: np.ndarray

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat {'iou_car': ..., 'precision_car': ..., 'miou': ...} over the non-background classes.

        Undefined values are NaN (see the module docstring); mIoU is the mean over the classes that have IoU.
        """
        out: dict[str, float] = {}
        for k, name in enumerate(self.class_names):
            if k == 0:
                continue
            out[f"{prefix}iou_{name}"] = float(self.iou[k])
            out[f"{prefix}precision_{name}"] = float(self.precision[k])
            out[f"{prefix}recall_{name}"] = float(self.recall[k])
        out[f"{prefix}miou"] = self.miou
        return out

    @property
    def miou(self) -> float:
        """Mean IoU over the non-background classes with ground-truth pixels; NaN when there is none."""
        defined = self.iou[1:][np.isfinite(self.iou[1:])]
        return float(defined.mean()) if len(defined) else float("nan")

    def table(self) -> str:
        """One line per class: IoU, precision, recall ('-' where undefined) and ground-truth pixels; then mIoU."""
        def cell(v: float) -> str:
            return f"{v:7.3f}" if np.isfinite(v) else f"{'-':>7}"

        lines = [f"{'class':<12} {'IoU':>7} {'prec':>7} {'recall':>7} {'pixels':>10}"]
        for k, name in enumerate(self.class_names):
            lines.append(f"{name:<12} {cell(self.iou[k])} {cell(self.precision[k])} {cell(self.recall[k])} "
                         f"{int(self.confusion[k].sum()):10d}")
        lines.append(f"{'mIoU':<12} {cell(self.miou)}")
        return "\n".join(lines)


def metrics_from_confusion(confusion: np.ndarray, class_names: tuple[str, ...] | list[str]) -> SegMetrics:
    conf = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(conf)
    fp = conf.sum(axis=0) - tp
    fn = conf.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (tp + fp + fn)
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
    iou[tp + fn == 0] = np.nan  # no ground-truth pixel: undefined, even with predictions (module docstring)
    return SegMetrics(tuple(class_names), np.asarray(confusion), iou, precision, recall)


def plot_confusion(confusion: np.ndarray, class_names: tuple[str, ...] | list[str], path: str | Path,
                   title: str = "confusion (rows: ground truth)") -> None:
    """Row-normalised confusion matrix as a PNG, with the raw counts printed in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = np.asarray(confusion, dtype=np.float64)
    norm = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2, 1.2 * k + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{norm[i, j]:.2f}\n{int(conf[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    from squeeze.atomic import atomic_write

    try:
        atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=120))  # never half a PNG
    finally:
        plt.close(fig)
