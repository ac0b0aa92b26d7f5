"""Segmentation metrics as SqueezeSeg defines them (reference/models.md 2.6).

Per class, TP / FP / FN are summed over the whole set (not averaged per frame), on valid pixels only;
IoU = TP / (TP + FP + FN), precision = TP / (TP + FP), recall = TP / (TP + FN). Everything follows from one
confusion matrix, accumulated frame by frame.
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
    """Per-class metrics of a confusion matrix. Arrays (K,); NaN where a class has no TP+FP+FN."""

    class_names: tuple[str, ...]
    confusion: np.ndarray
    iou: np.ndarray
    precision: np.ndarray
    recall: np.ndarray

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat {'iou_car': ..., 'precision_car': ..., 'miou': ...} over the non-background classes."""
        out: dict[str, float] = {}
        for k, name in enumerate(self.class_names):
            if k == 0:
                continue
            out[f"{prefix}iou_{name}"] = float(self.iou[k])
            out[f"{prefix}precision_{name}"] = float(self.precision[k])
            out[f"{prefix}recall_{name}"] = float(self.recall[k])
        out[f"{prefix}miou"] = float(np.nanmean(self.iou[1:])) if len(self.iou) > 1 else float("nan")
        return out

    def table(self) -> str:
        lines = [f"{'class':<12} {'IoU':>7} {'prec':>7} {'recall':>7} {'pixels':>10}"]
        for k, name in enumerate(self.class_names):
            lines.append(f"{name:<12} {self.iou[k]:7.3f} {self.precision[k]:7.3f} {self.recall[k]:7.3f} "
                         f"{int(self.confusion[k].sum()):10d}")
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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
