"""PNG figures (matplotlib, headless): training curves, confusion matrix, accuracy bars, video timeline."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

TIMELINE_CLASSES = 8  # at most this many classes drawn in a timeline


def training_curves(history: list[dict], path) -> None:
    """Loss (left axis) and validation top-1 (right axis, 0-1 with headroom so points at 1.0 show)
    per epoch; whole-number epoch ticks; the legend below the axes, where it cannot hide a point."""
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.8), layout="constrained")
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss", clip_on=False)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if epochs and max(epochs) - min(epochs) <= 12:
        ax.set_xticks(range(int(min(epochs)), int(max(epochs)) + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(epochs) == 1:
        ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
    if any("val_top1" in h for h in history):
        ax2 = ax.twinx()
        ax2.plot(
            [h["epoch"] for h in history if "val_top1" in h],
            [h["val_top1"] for h in history if "val_top1" in h],
            "s-",
            color="tab:orange",
            label="val top-1",
            clip_on=False,
            zorder=3,
        )
        ax2.set_ylabel("val top-1")
        ax2.set_ylim(0, 1.05)
        ax2.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    fig.legend(loc="outside lower center", ncol=2, fontsize=8)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def confusion_matrix(matrix: np.ndarray, classes: list[str], path, title: str = "confusion matrix") -> None:
    """Counts per (true, predicted) class, with a colour bar; numbers written in the cells when few."""
    n = len(classes)
    size = min(14, 3 + 0.4 * n)
    fig, ax = plt.subplots(figsize=(size + 1.5, size), layout="constrained")
    image = ax.imshow(matrix, cmap="Blues")
    from matplotlib.ticker import MaxNLocator

    bar = fig.colorbar(image, ax=ax, label="videos", shrink=0.8)
    bar.locator = MaxNLocator(integer=True)  # counts: whole-number ticks
    bar.update_ticks()
    if n <= 60:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(n), classes, fontsize=7)
    if n <= 25:
        top = matrix.max() if matrix.size else 0
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                ax.text(
                    j,
                    i,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if count > top / 2 else "black",
                )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def accuracy_bars(names: list[str], values: list[float], path, title: str = "top-1 accuracy") -> None:
    """Horizontal bars; the figure grows with the longest name and is saved with everything inside it
    (the title is the figure's, not the axes', so long bar labels cannot push it out of the picture)."""
    longest = max((len(n) for n in names), default=10)
    fig, ax = plt.subplots(figsize=(max(6.0, 3.5 + 0.075 * longest), 0.9 + 0.45 * len(names)))
    bars = ax.barh(names, values, color=["tab:blue"] + ["tab:gray"] * (len(names) - 1))
    labels = ax.bar_label(bars, labels=[f"{100 * v:.1f}%" for v in values], padding=3)
    ax.set_xlim(0, 1.15)
    ax.set_xticks(np.linspace(0, 1, 6))
    fig.suptitle(title, fontsize=10)
    ax.invert_yaxis()
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    for _ in range(4):  # widen the axis until every "100.0%" label sits inside the frame
        frame = ax.get_window_extent(renderer)
        over = max((t.get_window_extent(renderer).x1 for t in labels), default=0) - frame.x1
        if over <= 0:
            break
        low, high = ax.get_xlim()
        ax.set_xlim(low, high + (over + 4) * (high - low) / frame.width)
        fig.tight_layout()
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)


def timeline_chart(result: dict, probs: np.ndarray, classes: list[str], path) -> None:
    """Probability of the leading classes at each window centre (seconds); every top-1 class is drawn."""
    top1 = probs.argmax(1)
    chosen = sorted(set(top1.tolist()), key=lambda c: -probs[:, c].max())[:TIMELINE_CLASSES]
    for c in np.argsort(-probs.max(0), kind="stable").tolist():  # fill up with the next most probable
        if len(chosen) >= min(TIMELINE_CLASSES, 5, probs.shape[1]):
            break
        if c not in chosen:
            chosen.append(c)
    windows = result["windows"]
    centres = np.array([w["center_s"] for w in windows])
    fig, ax = plt.subplots(figsize=(10, 4.2), layout="constrained")
    marker = "o" if len(windows) <= 40 else None
    for c in chosen:
        name = classes[c] if len(classes[c]) <= 32 else classes[c][:31] + "…"
        ax.plot(centres, probs[:, c], marker=marker, markersize=3, linewidth=1.5, label=name)
    ax.set_xlim(0, max(result["duration_s"], 1e-6))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("time (s) — window centre")
    ax.set_ylabel("class probability")
    ax.grid(alpha=0.3)
    name = Path(result["video"]).name
    name = name if len(name) <= 60 else "…" + name[-59:]
    detail = (
        f"windows of {result['window']} frames ({result['window_s']:.2f} s), stride {result['stride']} frames "
        f"({result['stride_s']:.2f} s), {result['num_frames']} frames sampled per window ({result['sampling']})"
    )
    ax.set_title(f"{name}: class probabilities over time\n{textwrap.fill(detail, 110)}", fontsize=10)
    fig.legend(loc="outside right upper", title="class", fontsize=8)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
