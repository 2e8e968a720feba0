"""A model trained on rawframes (`zeroi2v prepare --format frames`) scores what it scores on the videos
the frames came from, and a model trained on the videos scores the same on their frames: the two
formats give the model the same pictures, in the same order."""

import json

import pytest

from tests.conftest import make_ramp_dataset, write_config
from zeroi2v.cli import main
from zeroi2v.prepare import prepare

pytestmark = pytest.mark.usefixtures("one_thread")
TRAINING = {"train__epochs": 10, "train__batch_size": 4}  # learns the order task from scratch


@pytest.fixture(scope="module")
def both_formats(tmp_path_factory):
    """The ramp videos (60 validation videos: 1 video = 1.7 points) and their JPEG frames."""
    videos = make_ramp_dataset(tmp_path_factory.mktemp("videos"), train_per_class=24, val_per_class=30)
    out = tmp_path_factory.mktemp("frames")
    for split in ("train", "val"):
        prepare(videos[f"{split}_list"], out, root=videos["root"], fmt="frames", progress=False, log=lambda *_: None)
    frames = {"root": str(out), "train_list": str(out / "train.txt"), "val_list": str(out / "val.txt")}
    assert (out / "train.txt").read_text().split("\n")[0].split()[1].isdigit()  # frame_dir total_frames label
    return {"videos": videos, "frames": frames}


def test_top1_is_the_same_on_videos_and_on_their_frames(both_formats, tmp_path):
    scores = {}
    for trained_on in ("frames", "videos"):
        run = tmp_path / trained_on
        config = write_config(tmp_path / f"{trained_on}.yaml", both_formats[trained_on], run, **TRAINING)
        assert main(["train", str(config)]) == 0
        for tested_on in ("frames", "videos"):
            data = both_formats[tested_on]
            assert (
                main(["eval", str(run), "--set", f"data.root={data['root']}", f"data.val_list={data['val_list']}"]) == 0
            )
            scores[trained_on, tested_on] = json.loads((run / "metrics.json").read_text())["top1"]
    print({f"{a} -> {b}": round(s, 3) for (a, b), s in scores.items()})
    for trained_on in ("frames", "videos"):
        assert scores[trained_on, trained_on] >= 0.8  # learned the order task (chance 0.5)
        assert abs(scores[trained_on, "frames"] - scores[trained_on, "videos"]) <= 0.05
