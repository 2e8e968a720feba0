"""Read the annotation layouts video datasets come with into one list of (relative path, label).

- MMAction2 list files: one `relative/path.ext LABEL` per line (K400, custom sets); blank lines and
  `#` comments are skipped. Rawframe lists (`frame_dir total_frames label`, as MMAction2's
  build_rawframes/denseflow tools write them) are read too: their counts go to `Annotations.lengths`.
  Lines with other column counts are rejected with file:line.
  A `classes.txt` beside the list (one name per line) names the classes and bounds the labels.
- A folder-per-class tree: `TREE/CLASS_NAME/*.mp4` (classes sorted by name), or rawframe folders
  `TREE/CLASS_NAME/VIDEO/img_00001.jpg` when the tree holds no videos; its paths are absolute,
  so separate `train/` and `val/` trees work whatever `data.root` is.
- Something-Something v2 JSON: `[{"id", "label", "template", "placeholders"}]` plus the labels file
  beside it (`labels.json`: template with "[something]" written as "something" -> index); the video
  is `<id>.webm`.
- UCF101 splits: `trainlist0N.txt` (`Class/v_x.avi 1-based-label`), `testlist0N.txt` (`Class/v_x.avi`),
  with `classInd.txt` beside them; the label is taken from the class folder.
- HMDB51 splits: `*_test_splitN.txt` files (`video.avi 1|2|0`: 1 train, 2 test, 0 unused), given as
  one of them or a glob such as `splits/*_test_split1.txt`; videos live in `root/CLASS_NAME/`.

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

from zeroi2v.data.frames import frame_folders
from zeroi2v.errors import UserError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")


@dataclass
class Annotations:
    samples: list[tuple[str, int]]
    classes: list[str] | None = None
    tree: bool = False  # a folder-per-class tree: labels are the sorted folder names' positions
    lines: list[int] | None = None  # list files: the line number of each sample (for errors)
    lengths: dict[str, int] | None = None  # rawframe lists: frame_dir -> total_frames


def load_annotations(root, ann=None, split: str = "train") -> Annotations:
    """Auto-detect the layout of `ann` (a file, a glob, a directory, or None = the class tree at root)."""
    root = Path(root) if root else Path(".")
    if ann is None or (Path(str(ann)).is_dir() and not _has_split_files(Path(str(ann)))):
        return _folder_tree(Path(ann) if ann else root, split)
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
        return _hmdb_splits(str(path.with_name("*" + path.name[path.name.index("_test_split") :])), split)
    return _list_file(path)


def _has_split_files(directory: Path) -> bool:
    return any(directory.glob("*list0*.txt")) or any(directory.glob("*_test_split*.txt"))


def _list_file(path: Path) -> Annotations:
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        raise UserError(
            f"{path} is a video, not an annotation file: give a list file ('path LABEL' per line) or a "
            "folder with one subfolder of videos per class"
        )
    samples, lines, lengths = [], [], {}
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()  # paths may contain spaces: the fields are counted from the end
        fields, parts = line.rsplit(maxsplit=1), line.rsplit(maxsplit=2)  # path label; frame_dir total label
        if _rawframe_line(words, fields[0], parts[0]):
            lengths[parts[0]] = _total_frames(path, number, parts[1])
            fields = [parts[0], parts[2]]
        elif len(fields) != 2 or len(words) > 2 and Path(fields[0]).suffix.lower() not in VIDEO_EXTENSIONS:
            raise UserError(
                f"{path}:{number}: expected 'relative/path.ext LABEL' (or 'frame_dir total_frames LABEL'), "
                f"got {len(words)} fields ({line[:60]!r})"
            )
        try:
            label = int(fields[1])
        except ValueError:
            raise UserError(f"{path}:{number}: label {fields[1]!r} is not an integer") from None
        if label < 0:
            raise UserError(f"{path}:{number}: negative label {label}")
        samples.append((fields[0], label))
        lines.append(number)
    if not samples:
        raise UserError(f"{path} lists no videos")
    classes_file = path.with_name("classes.txt")
    classes = _read_classes(classes_file) if classes_file.is_file() and classes_file != path else None
    if classes:
        check_labels(samples, len(classes), f"{path} (with {classes_file.name})", lines)
    return Annotations(samples, classes, lines=lines, lengths=lengths or None)


def _rawframe_line(words: list[str], video_path: str, frame_dir: str) -> bool:
    """`frame_dir total_frames label`: three fields or more (a folder name may contain spaces), neither
    reading of the path a video file, and a number before the label (or exactly three fields)."""
    if len(words) < 3 or any(Path(p).suffix.lower() in VIDEO_EXTENSIONS for p in (video_path, frame_dir)):
        return False
    return len(words) == 3 or words[-2].isdigit()


def _total_frames(path: Path, number: int, text: str) -> int:
    """The total_frames column of a rawframe list line."""
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"{path}:{number}: total_frames {text!r} of a rawframe list must be a positive integer")
    return int(text)


def read_text(path: Path) -> str:
    """A text annotation file; one-line errors for unreadable or non-UTF-8 files."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not a UTF-8 text file (byte {e.start}: {e.reason})") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory, expected a text file") from None


def _read_classes(path: Path) -> list[str]:
    names, seen = [], {}
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if name in seen:
            raise UserError(f"{path}:{number}: class {name!r} is listed twice (also line {seen[name]})")
        seen[name] = number
        names.append(name)
    return names


SPLIT_NAMES = {"train", "training", "val", "valid", "validation", "test", "testing"}


NO_VIDEOS = f"no videos ({', '.join(VIDEO_EXTENSIONS[:3])}, ...)"  # where a folder was given for videos


def videos_in(folder: Path) -> list[Path]:
    """The video files under `folder` (any depth, by extension), sorted: a folder given where videos go."""
    return sorted(f for f in Path(folder).rglob("*") if f.suffix.lower() in VIDEO_EXTENSIONS and f.is_file())


def _folder_tree(root: Path, split: str = "train") -> Annotations:
    """Every class folder must hold videos (an empty one is an error naming it, not a class without
    examples); a training tree needs two classes or more."""
    if not root.is_dir():
        raise UserError(
            f"data root {root} is a file, not a folder" if root.exists() else f"data root not found: {root}"
        )
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    splits = [c for c in classes if c.lower() in SPLIT_NAMES]
    if len(splits) >= 2 or (splits and len(classes) == len(splits)):
        raise UserError(
            f"{root} holds split folders ({', '.join(splits)}), not class folders: point "
            f"data.train_list / data.val_list at {root / splits[0]} and the other split"
        )
    loose = [f for f in root.iterdir() if f.suffix.lower() in VIDEO_EXTENSIONS and f.is_file()]
    if loose and (not classes or split == "train" and len(classes) == 1):
        raise UserError(
            f"{root} holds videos itself, so it looks like one class folder: point at its parent "
            f"{root.resolve().parent}, which should hold one folder of videos per class"
        )
    found = {name: videos_in(root / name) for name in classes}
    if not any(found.values()):  # rawframe folders: TREE/CLASS/VIDEO/img_00001.jpg
        found = {name: frame_folders(root / name) for name in classes}
    if not any(found.values()):
        raise UserError(f"{NO_VIDEOS} in class folders under {root}")
    empty = [name for name in classes if not found[name]]
    if empty:
        raise UserError(
            f"class folder {root / empty[0]} holds {NO_VIDEOS}"
            + (f" (nor do {', '.join(empty[1:4])})" if len(empty) > 1 else "")
            + ": add videos or remove the folder"
        )
    if split == "train" and len(classes) == 1:
        raise UserError(
            f"{root} has a single class folder ({classes[0]}); training needs two classes or more: point at "
            f"the folder that holds one folder per class"
        )
    samples = [(str(file.resolve()), label) for label, name in enumerate(classes) for file in found[name]]
    return Annotations(samples, classes, tree=True)


def match_classes(ann: Annotations, classes: list[str], source, reference: str) -> Annotations:
    """A class-folder tree (validation, test) labelled by the training classes' names: `classes` define
    the ids. A folder unknown to training is an error naming it (and the training class it differs from
    only in case); classes missing from the tree are fine."""
    index = {name: i for i, name in enumerate(classes)}
    folded = {name.lower(): name for name in classes}
    for name in ann.classes or []:
        if name not in index:
            near = folded.get(name.lower())
            hint = f" (training has {near!r}: names are case-sensitive)" if near else ""
            raise UserError(
                f"class folder {name!r} in {source} is not a training class{hint}; the {len(classes)} classes "
                f"of {reference}: {', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''}"
            )
    samples = [(path, index[ann.classes[label]]) for path, label in ann.samples]
    return Annotations(samples, list(classes), tree=True)


def _ssv2(path: Path) -> Annotations:
    try:
        entries = json.loads(read_text(path))
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(entries, list):
        raise UserError(f"{path}: expected a JSON list of {{'id', 'template', ...}} entries (SSv2 layout)")
    labels_file = path.with_name("labels.json")
    if not labels_file.is_file() or labels_file == path:
        found = sorted(p for p in path.parent.glob("*label*.json") if p != path)
        if not found:
            raise UserError(f"no SSv2 labels file (labels.json) next to {path}")
        labels_file = found[0]
    try:
        names = {name: int(index) for name, index in json.loads(read_text(labels_file)).items()}
    except (ValueError, AttributeError, TypeError):
        raise UserError(f"{labels_file}: expected a JSON object {{class name: index}}") from None
    classes = [name for name, _ in sorted(names.items(), key=lambda kv: kv[1])]
    if sorted(names.values()) != list(range(len(names))):
        raise UserError(f"{labels_file}: class indices must be 0..{len(names) - 1}, each once")
    samples = []
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry:
            raise UserError(f"{path}: entry {number} has no 'id'")
        if "template" not in entry:
            raise UserError(f"{path}: entry {number} has no 'template' (the unlabelled test split?)")
        name = entry["template"].replace("[", "").replace("]", "")
        if name not in names:
            raise UserError(f"{path}: entry {number}: template {name!r} is not in {labels_file.name}")
        samples.append((f"{entry['id']}.webm", names[name]))
    if not samples:
        raise UserError(f"{path} lists no videos")
    return Annotations(samples, classes)


def _ucf101(path: Path) -> Annotations:
    class_ind = path.with_name("classInd.txt")
    if not class_ind.is_file():
        raise UserError(f"classInd.txt not found next to {path}")
    classes = []
    for number, line in enumerate(read_text(class_ind).splitlines(), start=1):
        fields = line.split()
        if fields and (len(fields) != 2 or fields[0] != str(len(classes) + 1)):
            raise UserError(f"{class_ind}:{number}: expected '{len(classes) + 1} ClassName', got {line.strip()[:60]!r}")
        if fields:
            classes.append(fields[1])
    index = {name.lower(): i for i, name in enumerate(classes)}  # UCF101 spells HandstandPushups both ways
    samples = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        folder = fields[0].replace("\\", "/").split("/")[0].lower()
        if folder not in index:
            raise UserError(f"{path}:{number}: class folder {folder!r} is not in classInd.txt")
        samples.append((fields[0], index[folder]))
    if not samples:
        raise UserError(f"{path} lists no videos")
    return Annotations(samples, classes)


def _hmdb_splits(pattern: str, split: str) -> Annotations:
    files = sorted(glob.glob(pattern))
    if not files:
        raise UserError(f"no HMDB51 split files match {pattern}")
    wanted = "1" if split == "train" else "2"
    classes = [re.sub(r"_test_split\d+\.txt$", "", os.path.basename(f)) for f in files]
    samples = []
    for label, (name, file) in enumerate(zip(classes, files, strict=False)):
        for number, line in enumerate(read_text(Path(file)).splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in "012":
                raise UserError(f"{file}:{number}: expected 'video.avi 0|1|2', got {line.strip()[:60]!r}")
            if fields[1] == wanted:
                samples.append((f"{name}/{fields[0]}", label))
    return Annotations(samples, classes)


def few_shot(samples: list[tuple[str, int]], shots: int, seed: int = 0) -> list[tuple[str, int]]:
    """K videos per class, drawn with `seed`: the same draw every time, in the original order.

    Each class draws from its own generator seeded with (seed, label), so a class's draw does not
    change when other classes are added or removed. Classes with fewer than K videos keep them all.
    """
    if shots < 1:
        raise UserError(f"shots must be >= 1, got {shots}")
    by_class: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(samples):
        by_class.setdefault(label, []).append(i)
    chosen = []
    for label, members in by_class.items():
        rng = np.random.default_rng([seed, label])
        chosen += rng.choice(members, size=min(shots, len(members)), replace=False).tolist()
    return [samples[i] for i in sorted(chosen)]


MIRRORED_WORDS = {
    "left": "right",
    "right": "left",
    "clockwise": "counter-clockwise",  # a mirror turns
    "counter-clockwise": "clockwise",
    "counterclockwise": "clockwise",
}  # rotations too


def ssv2_flip_label_map(classes: list[str]) -> dict[int, int]:
    """{label: mirrored label} for classes whose horizontal mirror is another class.

    A class maps to the class named the same with "left" and "right" (and "clockwise" and
    "counter-clockwise") swapped. On SSv2 this gives the
    reference map {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166} (pulling / pushing something
    from left to right, turning the camera left / right while filming something).
    """
    index = {name.lower(): i for i, name in enumerate(classes)}
    mapping = {}
    for i, name in enumerate(classes):
        words = name.lower().split()
        mirrored = " ".join(MIRRORED_WORDS.get(w, w) for w in words)
        if mirrored != " ".join(words) and index.get(mirrored, i) != i:
            mapping[i] = index[mirrored]
    return mapping


flip_label_map = ssv2_flip_label_map  # the name the engine imports


def check_labels(samples, num_classes: int, source: str, lines: list[int] | None = None) -> None:
    """UserError naming the first sample whose label is not in 0..num_classes-1 (and its line, if known)."""
    bad = [i for i, (_, label) in enumerate(samples) if not 0 <= label < num_classes]
    if bad:
        path, label = samples[bad[0]]
        where = f"line {lines[bad[0]]}: " if lines and len(lines) == len(samples) else ""
        raise UserError(
            f"{source}: {where}label {label} of {path} is out of range for {num_classes} classes (0..{num_classes - 1})"
        )
