"""Annotation layouts users have on disk, parsed from fixtures of the real file layouts."""

import json

import numpy as np
import pytest

from zeroi2v.data import few_shot, load_annotations, ssv2_flip_label_map
from zeroi2v.errors import UserError


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_mmaction2_list_file(tmp_path):
    lst = tmp_path / "kinetics400_train_list_videos.txt"
    lst.write_text(
        "abseiling/0347ZoDXyP0_000095_000105.mp4 0\n\n# a comment\nzumba/zzzzE0ncP1Y_000232_000242.mp4 399\r\n"
    )
    ann = load_annotations(tmp_path, lst)
    assert ann.samples == [("abseiling/0347ZoDXyP0_000095_000105.mp4", 0), ("zumba/zzzzE0ncP1Y_000232_000242.mp4", 399)]
    assert ann.classes is None
    (tmp_path / "classes.txt").write_text("\n".join(f"class {i}" for i in range(400)) + "\n")
    assert load_annotations(tmp_path, lst).classes[399] == "class 399"


@pytest.mark.parametrize(
    "content, message",
    [
        ("a.mp4 0\nb.mp4\n", r"train\.txt:2: expected 'relative/path\.ext LABEL'"),
        ("frames/a 300 x y\n", r"train\.txt:1: expected .*4 fields"),
        ("frames/a 0 1\n", r"train\.txt:1: total_frames '0' of a rawframe list must be a positive integer"),
        ("frames/a many 1\n", "total_frames 'many'"),
        ("a.mp4 zero\n", r"train\.txt:1: label 'zero' is not an integer"),
        ("a.mp4 -1\n", "negative label"),
        ("\n# only comments\n", "lists no videos"),
    ],
)
def test_malformed_list_files_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "train.txt"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_annotations(tmp_path, path)


def test_labels_beyond_classes_txt_are_rejected(tmp_path):
    (tmp_path / "classes.txt").write_text("a\nb\n")
    (tmp_path / "train.txt").write_text("x.mp4 0\ny.mp4 2\n")
    with pytest.raises(UserError, match="label 2 of y.mp4 is out of range for 2 classes"):
        load_annotations(tmp_path, tmp_path / "train.txt")


def test_folder_per_class_tree(tmp_path):
    for name in (
        "walking/b.mp4",
        "walking/a.avi",
        "Running/x.webm",
        "walking/notes.txt",
        ".cache/z.mp4",
        "running fast/deep/y.mkv",
    ):
        touch(tmp_path / name)
    ann = load_annotations(tmp_path)  # ann=None: the root is the tree
    assert ann.classes == ["Running", "running fast", "walking"]
    # a tree's paths are its own (absolute), so separate train/ and val/ trees need no common data.root
    assert ann.samples == [
        (str(tmp_path.resolve() / rel), label)
        for rel, label in (
            ("Running/x.webm", 0),
            ("running fast/deep/y.mkv", 1),
            ("walking/a.avi", 2),
            ("walking/b.mp4", 2),
        )
    ]
    assert load_annotations(None, tmp_path).samples == ann.samples  # or the tree given as ann


def test_something_something_v2_json(tmp_path):
    labels = {
        "Pulling something from left to right": "0",
        "Pulling something from right to left": "1",
        "Putting something upright on the table": "2",
    }
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    (tmp_path / "train.json").write_text(
        json.dumps(
            [
                {
                    "id": "78687",
                    "label": "holding potato next to vicks vaporub bottle",
                    "template": "Pulling [something] from right to left",
                    "placeholders": ["potato"],
                },
                {
                    "id": "42326",
                    "label": "putting a bottle upright on the table",
                    "template": "Putting [something] upright on the table",
                    "placeholders": ["a bottle"],
                },
            ]
        )
    )
    ann = load_annotations(tmp_path / "20bn-something-something-v2", tmp_path / "train.json")
    assert ann.samples == [("78687.webm", 1), ("42326.webm", 2)]
    assert ann.classes == list(labels)
    (tmp_path / "test.json").write_text(json.dumps([{"id": "1420"}]))
    with pytest.raises(UserError, match="no 'template'"):
        load_annotations(tmp_path, tmp_path / "test.json")
    (tmp_path / "bad.json").write_text(json.dumps([{"id": "1", "template": "Juggling [something]"}]))
    with pytest.raises(UserError, match="not in labels.json"):
        load_annotations(tmp_path, tmp_path / "bad.json")


def test_ssv2_flip_label_map_matches_the_reference():
    classes = [f"class {i}" for i in range(174)]
    real = {
        49: "Plugging something into something but pulling it right out as you remove your hand",
        86: "Pulling something from left to right",
        87: "Pulling something from right to left",
        93: "Pushing something from left to right",
        94: "Pushing something from right to left",
        131: "Putting something upright on the table",
        166: "Turning the camera left while filming something",
        167: "Turning the camera right while filming something",
    }
    for i, name in real.items():
        classes[i] = name
    assert ssv2_flip_label_map(classes) == {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
    assert ssv2_flip_label_map(["walking", "running"]) == {}
    assert ssv2_flip_label_map(["rotating clockwise", "rotating counter-clockwise", "moving up"]) == {0: 1, 1: 0}


def test_ucf101_split_files(tmp_path):
    split_dir = tmp_path / "ucfTrainTestlist"
    split_dir.mkdir()
    (split_dir / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n2 Archery\r\n3 HandstandPushups\r\n")
    (split_dir / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\nArchery/v_Archery_g08_c01.avi 2\r\n"
        "HandStandPushups/v_HandStandPushups_g08_c01.avi 3\r\n"
    )
    (split_dir / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\r\n")
    train = load_annotations(tmp_path / "UCF-101", split_dir / "trainlist01.txt")
    assert train.classes == ["ApplyEyeMakeup", "Archery", "HandstandPushups"]
    assert [label for _, label in train.samples] == [0, 1, 2]
    test = load_annotations(tmp_path / "UCF-101", split_dir / "testlist01.txt", split="val")
    assert test.samples == [("Archery/v_Archery_g01_c01.avi", 1)]
    (split_dir / "testlist02.txt").write_text("Zumba/v_Zumba_g01_c01.avi\n")
    with pytest.raises(UserError, match=r"testlist02\.txt:1: class folder 'zumba' is not in classInd\.txt"):
        load_annotations(tmp_path, split_dir / "testlist02.txt")


def test_hmdb51_split_files(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    (splits / "brush_hair_test_split1.txt").write_text(
        "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \n"
        "Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi 2 \n"
        "brushing_hair_2_brush_hair_h_nm_np2_le_goo_0.avi 0 \n"
    )
    (splits / "cartwheel_test_split1.txt").write_text(
        "Acrobacias_cartwheel_f_cm_np1_le_med_0.avi 2 \nBodenturnen_cartwheel_f_cm_np1_le_med_0.avi 1 \n"
    )
    (splits / "cartwheel_test_split2.txt").write_text("Acrobacias_cartwheel_f_cm_np1_le_med_0.avi 1 \n")
    train = load_annotations(tmp_path / "hmdb51", str(splits / "*_test_split1.txt"), split="train")
    assert train.classes == ["brush_hair", "cartwheel"]
    assert train.samples == [
        ("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 0),
        ("cartwheel/Bodenturnen_cartwheel_f_cm_np1_le_med_0.avi", 1),
    ]
    val = load_annotations(
        tmp_path / "hmdb51", splits / "cartwheel_test_split1.txt", split="val"
    )  # one file: its split
    assert val.samples == [
        ("brush_hair/Blonde_being_brushed_brush_hair_f_nm_np2_ri_med_0.avi", 0),
        ("cartwheel/Acrobacias_cartwheel_f_cm_np1_le_med_0.avi", 1),
    ]
    (splits / "bad_test_split3.txt").write_text("x.avi 7\n")
    with pytest.raises(UserError, match=r"bad_test_split3\.txt:1"):
        load_annotations(tmp_path, str(splits / "*_test_split3.txt"))


def test_missing_paths_are_one_line_errors(tmp_path):
    (tmp_path / "file.txt").write_text("")
    for call, message in [
        (lambda: load_annotations(tmp_path, tmp_path / "nope.txt"), "not found"),
        (lambda: load_annotations(tmp_path / "nowhere"), "data root not found"),
        (lambda: load_annotations(tmp_path / "file.txt"), "is a file, not a folder"),
        (lambda: load_annotations(tmp_path), "no videos"),
        (lambda: load_annotations(tmp_path, str(tmp_path / "*_test_split9.txt")), "no HMDB51"),
    ]:
        with pytest.raises(UserError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def test_few_shot_draw_is_seeded_and_per_class():
    samples = [(f"v{i}.mp4", i % 5) for i in range(100)] + [("rare.mp4", 5)]
    draw = few_shot(samples, 4, seed=3)
    assert draw == few_shot(list(samples), 4, seed=3)  # the same list every time
    assert draw != few_shot(samples, 4, seed=4)
    assert np.bincount([label for _, label in draw]).tolist() == [4, 4, 4, 4, 4, 1]  # fewer than K: all
    assert draw == sorted(draw, key=samples.index)  # original order kept
    without_rare = few_shot(samples[:-1], 4, seed=3)
    assert without_rare == [s for s in draw if s[1] != 5]  # a class's draw does not depend on the others
    with pytest.raises(UserError):
        few_shot(samples, 0, seed=0)


# --- newcomer round 3: class folders matched by name, empty folders, list-file mistakes -------------
def tree(root, names, per_class=1):
    for name in names:
        for i in range(per_class):
            touch(root / name / f"{name}_{i}.mp4")
    return root


def split_config(train, val):
    from zeroi2v.config import load_config

    return load_config(None, [f"data.train_list={train}", f"data.val_list={val}"])


def test_validation_tree_is_labelled_by_the_training_class_names(tmp_path):
    from zeroi2v.data.build import load_split

    train = tree(tmp_path / "train", ["bikes", "bunny", "carphone"])
    val = tree(tmp_path / "val", ["bikes", "carphone"])  # one training class has no validation videos
    ann = load_split(split_config(train, val), "val")
    assert ann.classes == ["bikes", "bunny", "carphone"]
    assert sorted(label for _, label in ann.samples) == [0, 2]  # carphone keeps its training id
    # the model's own class names win when given (eval of a saved model)
    ann = load_split(split_config(train, val), "val", classes=["carphone", "bikes"])
    assert {path.split("/")[-2]: label for path, label in ann.samples} == {"carphone": 0, "bikes": 1}


@pytest.mark.parametrize(
    "folder, message",
    [("zebra", "class folder 'zebra' in .* is not a training class"), ("Bikes", "training has 'bikes'.*case")],
)
def test_a_validation_class_unknown_to_training_is_named(tmp_path, folder, message):
    from zeroi2v.data.build import load_split

    train = tree(tmp_path / "train", ["bikes", "bunny"])
    val = tree(tmp_path / "val", ["bunny", folder])
    with pytest.raises(UserError, match=message):
        load_split(split_config(train, val), "val")


def test_an_empty_class_folder_is_an_error_naming_it(tmp_path):
    tree(tmp_path, ["bikes", "bunny"])
    (tmp_path / "carphone").mkdir()
    with pytest.raises(UserError, match=r"class folder .*carphone holds no videos"):
        load_annotations(None, tmp_path)


def test_a_single_class_folder_hints_at_its_parent(tmp_path):
    tree(tmp_path, ["bikes"], per_class=2)
    with pytest.raises(UserError, match=f"point at its parent {tmp_path}"):
        load_annotations(None, tmp_path / "bikes")
    with pytest.raises(UserError, match="single class folder"):
        load_annotations(None, tmp_path)


def test_list_file_mistakes(tmp_path):
    video = touch(tmp_path / "clip.mp4")
    with pytest.raises(UserError, match="is a video, not an annotation file"):
        load_annotations(tmp_path, video)
    (tmp_path / "classes.txt").write_text("a\nb\n")
    (tmp_path / "train.txt").write_text("x.mp4 0\n\ny.mp4 1\nz.mp4 5\n")
    with pytest.raises(UserError, match=r"line 4: label 5 of z.mp4 is out of range for 2 classes"):
        load_annotations(tmp_path, tmp_path / "train.txt")
    (tmp_path / "classes.txt").write_text("a\nb\na\n")
    with pytest.raises(UserError, match=r"classes.txt:3: class 'a' is listed twice \(also line 1\)"):
        load_annotations(tmp_path, tmp_path / "train.txt")


def test_list_paths_may_contain_spaces(tmp_path):
    (tmp_path / "train.txt").write_text("my clips/run 2.mp4 1\nwalk.mp4 0\nair drumming/clip 3 40 1\n")
    ann = load_annotations(tmp_path, tmp_path / "train.txt")
    assert ann.samples == [("my clips/run 2.mp4", 1), ("walk.mp4", 0), ("air drumming/clip 3", 1)]
    assert ann.lengths == {"air drumming/clip 3": 40}  # a rawframe folder named with spaces


def test_without_data_root_list_paths_are_relative_to_the_list_file(tmp_path, monkeypatch):
    from zeroi2v.data.build import load_split

    project = tmp_path / "project"
    touch(project / "clips" / "run 2.mp4")
    (project / "frames" / "a").mkdir(parents=True)
    (project / "train.txt").write_text("clips/run 2.mp4 1\nframes/a 12 0\n")
    monkeypatch.chdir(tmp_path)  # the command runs elsewhere
    ann = load_split(split_config(project / "train.txt", project / "train.txt"), "train")
    assert ann.samples == [(str(project / "clips" / "run 2.mp4"), 1), (str(project / "frames" / "a"), 0)]
    assert ann.lengths == {str(project / "frames" / "a"): 12}
