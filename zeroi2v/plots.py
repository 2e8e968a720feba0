"""PNG figures of a run (matplotlib, headless): training curves, confusion matrix, accuracy bars."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def training_curves(history: list[dict], path) -> None:
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if any("val_top1" in h for h in history):
        ax2 = ax.twinx()
        ax2.plot([h["epoch"] for h in history if "val_top1" in h], [h["val_top1"] for h in history if "val_top1" in h],
                 "s-", color="tab:orange", label="val top-1")
        ax2.set_ylabel("val top-1")
        ax2.set_ylim(0, 1)
    fig.legend(loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def confusion_matrix(matrix: np.ndarray, classes: list[str], path) -> None:
    n = len(classes)
    size = min(12, 2 + 0.35 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    if n <= 60:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(n), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def accuracy_bars(names: list[str], values: list[float], path, title: str = "top-1 accuracy") -> None:
    """Horizontal bars; the figure grows with the longest name and is saved with everything inside it
    (the title is the figure's, not the axes', so long bar labels cannot push it out of the picture)."""
    longest = max((len(n) for n in names), default=10)
    fig, ax = plt.subplots(figsize=(max(6.0, 3.5 + 0.075 * longest), 0.9 + 0.45 * len(names)))
    bars = ax.barh(names, values, color=["tab:blue"] + ["tab:gray"] * (len(names) - 1))
    ax.bar_label(bars, labels=[f"{100 * v:.1f}%" for v in values], padding=3)
    ax.set_xlim(0, 1.15)
    fig.suptitle(title, fontsize=10)
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
