"""Read the annotation layouts video datasets come with into one list of (relative path, label).

- MMAction2 list files: one `relative/path.ext LABEL` per line (K400, custom sets).
- A folder-per-class tree: `root/CLASS_NAME/*.mp4` (classes sorted by name).
- Something-Something v2 JSON: `[{"id", "template", ...}]` plus the labels file beside it
  (`*labels*.json`, name -> index); the video is `<id>.webm`.
- UCF101 splits: `trainlist0N.txt` (`Class/v_x.avi 1-based-label`), `testlist0N.txt` (`Class/v_x.avi`),
  with `classInd.txt` beside them.
- HMDB51 splits: `*_test_splitN.txt` files (`video.avi 1|2|0`: 1 train, 2 test, 0 unused), given as a
  glob such as `splits/*_test_split1.txt`; videos live in `root/CLASS_NAME/`.

Every problem is a one-line `UserError` naming the file (and line).
"""
from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zeroi2v.errors import UserError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")


@dataclass
class Annotations:
    samples: list[tuple[str, int]]
    classes: list[str] | None = None


def load_annotations(root, ann=None, split: str = "train") -> Annotations:
    """Auto-detect the layout of `ann` (a file, a glob, a directory, or None = the class tree at root)."""
    root = Path(root) if root else Path(".")
    if ann is None or (Path(str(ann)).is_dir() and not _has_split_files(Path(str(ann)))):
        return _folder_tree(Path(ann) if ann else root)
    ann_s = str(ann)
    if any(ch in ann_s for ch in "*?["):
        return _hmdb_splits(ann_s, split)
    path = Path(ann_s)
    if path.is_dir():
        raise UserError(f"{path} is a directory of split files; pass the split file itself (e.g. trainlist01.txt)")
    if not path.is_file():
        raise UserError(f"annotation file not found: {path}")
    if path.suffix == ".json":
        return _ssv2(path)
    if re.fullmatch(r"(train|test)list\d+\.txt", path.name):
        return _ucf101(path)
    if re.search(r"_test_split\d+\.txt$", path.name):
        return _hmdb_splits(str(path.with_name("*" + path.name[path.name.index("_test_split"):])), split)
    return _list_file(path)


def _has_split_files(directory: Path) -> bool:
    return any(directory.glob("*list0*.txt")) or any(directory.glob("*_test_split*.txt"))


def _list_file(path: Path) -> Annotations:
    samples = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise UserError(f"{path}:{number}: expected 'relative/path.ext LABEL', got {len(fields)} fields "
                            f"({line[:60]!r}); rawframe lists with a frame-count column are not supported")
        try:
            label = int(fields[1])
        except ValueError:
            raise UserError(f"{path}:{number}: label {fields[1]!r} is not an integer") from None
        if label < 0:
            raise UserError(f"{path}:{number}: negative label {label}")
        samples.append((fields[0], label))
    if not samples:
        raise UserError(f"{path} lists no videos")
    classes_file = path.with_name("classes.txt")
    classes = _read_classes(classes_file) if classes_file.is_file() else None
    return Annotations(samples, classes)


def _read_classes(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _folder_tree(root: Path) -> Annotations:
    if not root.is_dir():
        raise UserError(f"data root not found: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    samples = []
    for label, name in enumerate(classes):
        for file in sorted((root / name).rglob("*")):
            if file.suffix.lower() in VIDEO_EXTENSIONS:
                samples.append((str(file.relative_to(root)), label))
    if not samples:
        raise UserError(f"no videos ({', '.join(VIDEO_EXTENSIONS[:3])}, ...) in class folders under {root}")
    return Annotations(samples, classes)


def _ssv2(path: Path) -> Annotations:
    try:
        entries = json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
    labels_files = [p for p in path.parent.glob("*label*.json") if p != path]
    if not labels_files:
        raise UserError(f"no SSv2 labels file (*labels*.json) next to {path}")
    names = json.loads(labels_files[0].read_text())
    classes = [name for name, _ in sorted(names.items(), key=lambda kv: int(kv[1]))]
    samples = []
    for number, entry in enumerate(entries):
        if "template" not in entry:
            raise UserError(f"{path}: entry {number} has no 'template' (unlabelled test split?)")
        name = entry["template"].replace("[", "").replace("]", "")
        if name not in names:
            raise UserError(f"{path}: entry {number}: template {name!r} is not in {labels_files[0].name}")
        samples.append((f"{entry['id']}.webm", int(names[name])))
    return Annotations(samples, classes)


def _ucf101(path: Path) -> Annotations:
    class_ind = path.with_name("classInd.txt")
    if not class_ind.is_file():
        raise UserError(f"classInd.txt not found next to {path}")
    classes = [line.split()[1] for line in class_ind.read_text().splitlines() if line.strip()]
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        folder = fields[0].split("/")[0]
        if folder not in index:
            raise UserError(f"{path}:{number}: class folder {folder!r} is not in classInd.txt")
        samples.append((fields[0], index[folder]))
    return Annotations(samples, classes)


def _hmdb_splits(pattern: str, split: str) -> Annotations:
    files = sorted(glob.glob(pattern))
    if not files:
        raise UserError(f"no HMDB51 split files match {pattern}")
    wanted = "1" if split == "train" else "2"
    classes = [re.sub(r"_test_split\d+\.txt$", "", os.path.basename(f)) for f in files]
    samples = []
    for label, (name, file) in enumerate(zip(classes, files)):
        for number, line in enumerate(Path(file).read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in "012":
                raise UserError(f"{file}:{number}: expected 'video.avi 0|1|2', got {line.strip()[:60]!r}")
            if fields[1] == wanted:
                samples.append((f"{name}/{fields[0]}", label))
    return Annotations(samples, classes)


def few_shot(samples: list[tuple[str, int]], shots: int, seed: int = 0) -> list[tuple[str, int]]:
    """K training videos per class, drawn with `seed` (the same draw every time); order kept."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(samples):
        by_class.setdefault(label, []).append(i)
    chosen = []
    for label in sorted(by_class):
        members = by_class[label]
        chosen += list(rng.choice(members, size=min(shots, len(members)), replace=False))
    return [samples[i] for i in sorted(chosen)]




def flip_label_map(classes: list[str]) -> dict[int, int]:
    """Classes whose horizontal mirror is another class (SSv2: "left to right" <-> "right to left")."""
    index = {name: i for i, name in enumerate(classes)}
    mapping = {}
    for i, name in enumerate(classes):
        words = name.split()
        if "left" not in words and "right" not in words:
            continue
        mirrored = " ".join({"left": "right", "right": "left"}.get(w, w) for w in words)
        if mirrored in index and index[mirrored] != i:
            mapping[i] = index[mirrored]
    return mapping


def check_labels(samples, num_classes: int, source: str) -> None:
    bad = [(p, label) for p, label in samples if not 0 <= label < num_classes]
    if bad:
        raise UserError(f"{source}: label {bad[0][1]} of {bad[0][0]} is out of range for {num_classes} classes")
