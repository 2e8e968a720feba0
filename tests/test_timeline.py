"""`predict --timeline`: sliding windows over a 60 s video whose class changes halfway, JSON/CSV/PNG,
the annotated video, bounded decoding, short videos and bad input.

The model is a tiny random timm ViT made to see colour, deterministically:
- global_pool="avg" (the pooled token is the mean of the patch tokens, then fc_norm = LayerNorm);
- every block is an identity: attention output projections and fc2 (weights and biases) are zero, so
  with the zero-initialised adapters and temporal embedding nothing is added to the residual stream;
  the position embedding is zero;
- the patch embedding writes the patch's mean red into channel 0 and mean blue into channel 1, every
  other channel 0; after the LayerNorm, channel 0 minus channel 1 has the sign of red minus blue;
- the head scores class 0 ("red") as channel 0 − channel 1, class 1 ("blue") as the opposite and
  class 2 ("other") as 0.
So a red frame is class "red" with probability ≈ 1, a blue frame "blue"; a window's class is the
colour of most of its frames.
"""

import csv
import json
import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml

import zeroi2v
import zeroi2v.timeline as timeline_module
from zeroi2v.errors import UserError
from zeroi2v.timeline import plan_windows, timeline

pytestmark = pytest.mark.usefixtures("one_thread")

FPS, SECONDS, HEIGHT, WIDTH = 8, 60, 48, 64
NUM_FRAMES, INTERVAL = 4, 4  # window = 16 frames = 2 s; default stride 8 frames = 1 s
RED, BLUE = (200, 30, 30), (30, 30, 200)


def write_colour_video(path, colours, fps=FPS, height=HEIGHT, width=WIDTH, seed=0):
    """H.264 video, frame i a noisy field of colours[i] (frames made and encoded one at a time)."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "g": "16"}
        for colour in colours:
            frame = np.clip(np.array(colour) + rng.normal(0, 10, (height, width, 3)), 0, 255).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return Path(path)


def colour_model(directory: Path, sampling="dense") -> Path:
    model = zeroi2v.create_model(
        "vit_tiny_patch16_224",
        num_frames=NUM_FRAMES,
        num_classes=3,
        img_size=32,
        patch_size=8,
        depth=2,
        embed_dim=64,
        num_heads=4,
        global_pool="avg",
    )
    vit = model.backbone
    with torch.no_grad():
        vit.pos_embed.zero_()
        for block in vit.blocks:
            for layer in (block.attn.proj, block.mlp.fc2):
                layer.weight.zero_()
                layer.bias.zero_()
        model.temporal_embed.zero_()
        proj = vit.patch_embed.proj
        proj.weight.zero_()
        proj.bias.zero_()
        proj.weight[0, 0] = 1 / proj.weight[0, 0].numel()  # channel 0: mean red of the patch
        proj.weight[1, 2] = 1 / proj.weight[1, 2].numel()  # channel 1: mean blue
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.weight[0, :2] = torch.tensor([1.0, -1.0])
        model.head.weight[1, :2] = torch.tensor([-1.0, 1.0])
    zeroi2v.save_pretrained(model, directory)
    (directory / "classes.txt").write_text("red\nblue\nother\n")
    cfg = {
        "model": {
            "backbone": "vit_tiny_patch16_224",
            "num_frames": NUM_FRAMES,
            "num_classes": 3,
            "timm_kwargs": {"patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 4},
        },
        "data": {"sampling": sampling, "frame_interval": INTERVAL, "img_size": 32, "test_clips": 1, "test_crops": 1},
    }
    (directory / "config.yaml").write_text(yaml.safe_dump(cfg))
    return directory


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return colour_model(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    n = FPS * SECONDS
    return write_colour_video(tmp_path_factory.mktemp("video") / "halves.mp4", [RED] * (n // 2) + [BLUE] * (n // 2))


def decoded_frames(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, float(stream.average_rate)


def test_windows_cover_the_video():
    plan = plan_windows(480, NUM_FRAMES, "dense", INTERVAL)
    assert plan["window"] == 16 and plan["stride"] == 8 and not plan["short"]
    assert plan["starts"][0] == 0 and plan["ends"][-1] == 480 and len(plan["starts"]) == 59
    assert plan["indices"][0].tolist() == [1, 5, 9, 13]  # dense, centred in the window as the test sampler does
    tail = plan_windows(100, NUM_FRAMES, "dense", INTERVAL, stride=30, window=32)
    assert tail["starts"].tolist() == [0, 30, 60, 68]  # a last window ends at the last frame
    uniform = plan_windows(480, NUM_FRAMES, "uniform", INTERVAL, window=40)
    assert uniform["window"] == 40 and uniform["stride"] == 20
    assert (np.diff(uniform["indices"][0]) > 0).all() and uniform["indices"][0].max() < 40
    short = plan_windows(10, NUM_FRAMES, "dense", INTERVAL)
    assert short["short"] and short["indices"].shape == (1, NUM_FRAMES) and short["indices"].max() < 10


def test_timeline_finds_the_change(run, long_video, tmp_path, monkeypatch):
    calls = []
    real_read = timeline_module.read_frames

    def recording_read(path, indices, backend="auto"):  # the real decoder, with the request sizes noted
        calls.append(len(indices))
        return real_read(path, indices, backend)

    monkeypatch.setattr(timeline_module, "read_frames", recording_read)
    annotated = tmp_path / "out" / "annotated.mp4"
    result = timeline(
        run, long_video, out_prefix=tmp_path / "out" / "halves", annotate=annotated, topk=2, progress=False
    )

    # bounded decoding: batches of windows, never the whole video
    assert max(calls) <= timeline_module.WINDOW_BATCH * NUM_FRAMES and len(calls) >= 59 // timeline_module.WINDOW_BATCH
    windows = result["windows"]
    assert len(windows) == 59 and result["window"] == 16 and result["stride"] == 8 and not result["short"]
    assert result["fps"] == FPS and result["frames"] == FPS * SECONDS
    top1 = [w["top"][0]["class"] for w in windows]
    assert set(top1) == {"red", "blue"}
    change = top1.index("blue")
    assert top1[:change] == ["red"] * change and top1[change:] == ["blue"] * (len(top1) - change)  # one change
    expected = min(range(len(windows)), key=lambda i: abs(windows[i]["center_s"] - SECONDS / 2))  # window 29
    assert abs(change - expected) <= 1, (change, expected)
    assert abs(windows[change]["center_s"] - SECONDS / 2) <= 1.5
    assert windows[0]["top"][0]["probability"] > 0.9 and windows[-1]["top"][0]["probability"] > 0.9

    paths = result["paths"]
    saved = json.loads(Path(paths["json"]).read_text())
    assert paths["json"].endswith("halves.json") and saved["windows"][change]["top"][0]["class"] == "blue"
    assert len(saved["windows"][0]["top"]) == 2 and saved["note"] is None
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 59 * 2 and rows[0]["class"] == "red" and rows[0]["rank"] == "1"
    assert float(rows[-2]["start_s"]) == pytest.approx(windows[-1]["start_s"], abs=1e-3)
    assert Path(paths["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    frames, fps = decoded_frames(annotated)
    assert len(frames) == FPS * SECONDS and fps == FPS
    assert frames[0].shape == (HEIGHT, WIDTH, 3)
    source, _ = decoded_frames(long_video)
    corner = (slice(0, 4), slice(0, 4))  # the label's black box
    assert frames[10][corner].mean() < 40 < source[10][corner].mean()
    assert np.abs(frames[10][-10:].astype(int) - source[10][-10:]).mean() < 8  # the picture itself is kept
    # the drawn label changes at the change: the text pixels differ between "red ..." and "blue ..."
    box = (slice(0, HEIGHT // 8), slice(0, WIDTH // 2))
    assert np.abs(frames[30][box].astype(int) - frames[FPS * SECONDS - 30][box]).mean() > 5


def test_stride_and_uniform_windows(tmp_path, long_video):
    run = colour_model(tmp_path / "uniform", sampling="uniform")
    result = timeline(run, long_video, stride=16, window=32, out_prefix=tmp_path / "u", progress=False)
    assert result["stride"] == 16 and result["window"] == 32 and len(result["windows"]) == (480 - 32) // 16 + 1
    top1 = [w["top"][0]["class"] for w in result["windows"]]
    change = top1.index("blue")
    assert top1[change:] == ["blue"] * (len(top1) - change)
    assert abs(result["windows"][change]["center_s"] - SECONDS / 2) <= 2


def test_short_video_is_one_window(run, tmp_path):
    video = write_colour_video(tmp_path / "short.mp4", [BLUE] * 10)
    annotated = tmp_path / "short_annotated.mkv"
    result = timeline(run, video, out_prefix=tmp_path / "short", annotate=annotated, progress=False)
    assert result["short"] and len(result["windows"]) == 1 and "fewer than one window" in result["note"]
    assert result["windows"][0]["top"][0]["class"] == "blue"
    assert json.loads((tmp_path / "short.json").read_text())["short"] is True
    assert len(decoded_frames(annotated)[0]) == 10


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize("stride", [0, -8, 2.5, True])
def test_bad_stride(run, long_video, tmp_path, stride):
    with pytest.raises(UserError) as excinfo:
        timeline(run, long_video, stride=stride, out_prefix=tmp_path / "x", progress=False)
    assert "stride" in one_line_error(excinfo)
    assert not list(tmp_path.iterdir())  # refused before any work or output


def test_unwritable_outputs(run, long_video, tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output was checked")

    monkeypatch.setattr(timeline_module, "read_frames", no_work)
    (tmp_path / "a_file").write_text("")
    (tmp_path / "folder.mp4").mkdir()
    for annotate, words in (
        (tmp_path / "a_file" / "out.mp4", "not a directory"),
        (tmp_path / "out.gif", ".mp4"),
        (tmp_path / "folder.mp4", "directory"),
        (long_video, "input"),
    ):
        with pytest.raises(UserError) as excinfo:
            timeline(run, long_video, annotate=annotate, out_prefix=tmp_path / "x", progress=False)
        assert words in one_line_error(excinfo), one_line_error(excinfo)
    with pytest.raises(UserError) as excinfo:
        timeline(run, long_video, out_prefix=tmp_path / "a_file" / "x", progress=False)
    assert "not a directory" in one_line_error(excinfo)
    model_json = Path(run) / "model.json"
    before = model_json.read_bytes()
    with pytest.raises(UserError) as excinfo:  # PREFIX.json would be the model's own model.json
        timeline(run, long_video, out_prefix=Path(run) / "model", progress=False)
    assert "refusing to overwrite" in one_line_error(excinfo)
    assert model_json.read_bytes() == before
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(UserError) as excinfo:
            timeline(run, long_video, annotate=locked / "out.mp4", out_prefix=tmp_path / "x", progress=False)
        assert "cannot write" in one_line_error(excinfo)


def test_bad_video(run, tmp_path):
    with pytest.raises(UserError) as excinfo:
        timeline(run, tmp_path / "missing.mp4", out_prefix=tmp_path / "x", progress=False)
    assert "no such video" in one_line_error(excinfo)
    with pytest.raises(UserError) as excinfo:
        timeline(run, tmp_path, out_prefix=tmp_path / "x", progress=False)
    assert "is a directory, not a video file" in one_line_error(excinfo)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all\n" * 10)
    with pytest.raises(UserError) as excinfo:
        timeline(run, junk, out_prefix=tmp_path / "x", progress=False)
    one_line_error(excinfo)
    with pytest.raises(UserError) as excinfo:
        timeline(run, junk, topk=0, out_prefix=tmp_path / "x", progress=False)
    assert "topk" in one_line_error(excinfo)


# --- newcomer round 3 ---------------------------------------------------------------------------------
def test_default_windows_follow_the_sampling_and_the_json_stride_is_the_real_one():
    uniform = plan_windows(480, NUM_FRAMES, "uniform", INTERVAL)
    assert uniform["window"] == NUM_FRAMES * timeline_module.UNIFORM_STEP  # not num_frames × frame_interval
    for n in (26, 30, 100, 181):  # the default stride steps evenly to the end
        plan = plan_windows(n, NUM_FRAMES, "dense", INTERVAL)
        steps = set(np.diff(plan["starts"]).tolist())
        assert steps == {plan["stride"]} and plan["ends"][-1] == n and not plan["tail"], (n, plan["starts"])
        assert plan["stride"] <= plan["window"] // 2
    given = plan_windows(100, NUM_FRAMES, "dense", INTERVAL, stride=30, window=32)  # kept; the tail is flagged
    assert given["stride"] == 30 and given["tail"] and given["starts"].tolist() == [0, 30, 60, 68]


@pytest.mark.parametrize(
    "kwargs, words", [({"window": 1}, "at least"), ({"window": 16, "stride": 17}, "longer than the window")]
)
def test_useless_windows_are_refused(run, long_video, tmp_path, kwargs, words):
    with pytest.raises(UserError) as excinfo:
        timeline(run, long_video, out_prefix=tmp_path / "x", progress=False, **kwargs)
    assert words in one_line_error(excinfo)
    assert not list(tmp_path.iterdir())


def test_only_earlier_timeline_outputs_are_replaced(run, tmp_path):
    video = write_colour_video(tmp_path / "clip.mp4", [BLUE] * 40)
    notes = {ext: tmp_path / f"notes.{ext}" for ext in ("json", "csv")}
    for ext, path in notes.items():
        path.write_text(f"my own {ext}\n")
        with pytest.raises(UserError) as excinfo:
            timeline(run, video, out_prefix=tmp_path / "notes", progress=False)
        assert str(path) in one_line_error(excinfo) and "refusing to overwrite" in one_line_error(excinfo)
        assert path.read_text() == f"my own {ext}\n"
        path.unlink()
    other = write_colour_video(tmp_path / "fast.mp4", [RED] * 12)  # someone's video
    before = other.read_bytes()
    with pytest.raises(UserError) as excinfo:
        timeline(run, video, out_prefix=tmp_path / "t", annotate=other, progress=False)
    assert "fast.mp4" in one_line_error(excinfo) and other.read_bytes() == before
    annotated = tmp_path / "annotated.mp4"
    first = timeline(run, video, out_prefix=tmp_path / "t", annotate=annotated, progress=False)
    again = timeline(run, video, out_prefix=tmp_path / "t", annotate=annotated, progress=False)  # ours: replaced
    assert again["paths"] == first["paths"]
