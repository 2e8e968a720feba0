"""Decoding real files written by the tests: the frames returned are exactly the ones asked for."""

import math
import os
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from tests.videos import index_frame, read_index, write_index_video
from zeroi2v.data import VideoDecodeError, num_frames, read_frames
from zeroi2v.data.decode import torchcodec_available
from zeroi2v.errors import UserError

# (file name, writer arguments): codecs and containers users have, odd sizes, grey, B-frames, audio.
VIDEOS = {
    "h264": ("v.mp4", {}),
    "h264_bframes_long_gop": ("v.mp4", {"bframes": True, "gop": 250}),
    "h264_audio_faststart": ("v.mp4", {"audio": True, "options": {"movflags": "faststart"}}),
    "vp9": ("v.webm", {"codec": "libvpx-vp9"}),
    "mjpeg": ("v.avi", {"codec": "mjpeg"}),
    "mpeg4_odd_size": ("v.mp4", {"codec": "mpeg4", "width": 67, "height": 37}),
    "gray_content": ("v.mp4", {"gray": True}),
    "gray_stream": ("v.mkv", {"codec": "ffv1", "gray": True}),
}


def indices_of(frames: torch.Tensor) -> list[int]:
    return [read_index(f.numpy()) for f in frames]


@pytest.mark.parametrize("name", VIDEOS)
def test_decoded_frames_are_the_requested_ones(tmp_path, name):
    filename, kwargs = VIDEOS[name]
    path = write_index_video(tmp_path / filename, 90, **kwargs)
    assert num_frames(path) == 90
    rng = np.random.default_rng(0)
    index_sets = [
        [0],
        [89],
        [0, 1, 2],
        [88, 3, 47, 3, 88],
        list(range(40, 90, 7)),
        *(rng.integers(0, 90, size=int(rng.integers(1, 12))).tolist() for _ in range(4)),
    ]
    for indices in index_sets:
        frames = read_frames(path, indices, backend="pyav")
        assert frames.dtype == torch.uint8 and frames.shape[1:] == (
            kwargs.get("height", 48),
            kwargs.get("width", 64),
            3,
        )
        assert indices_of(frames) == indices  # given order, repeats kept


def test_gray_stream_decodes_to_three_equal_channels(tmp_path):
    path = write_index_video(tmp_path / "g.mkv", 10, codec="ffv1", gray=True)
    assert av.open(path).streams.video[0].codec_context.pix_fmt == "gray"
    frames = read_frames(path, [3, 7])
    assert torch.equal(frames[..., 0], frames[..., 1]) and torch.equal(frames[..., 1], frames[..., 2])


def test_variable_frame_rate_is_indexed_by_time(tmp_path):
    jitter = write_index_video(tmp_path / "jitter.mp4", 40, vfr=True)
    assert num_frames(jitter) == 40
    assert indices_of(read_frames(jitter, [0, 10, 20, 34, 39])) == [0, 10, 20, 34, 39]
    # Frames missing from the capture: a frame takes the index nearest to its time × average fps
    # (the first one wins a tie); an index no frame lands on shows the frame before.
    dropped = (5, 6, 7, 20, 33, 34)
    path = write_index_video(tmp_path / "gaps.mp4", 60, drop=dropped)
    stream = av.open(path).streams.video[0]
    fps, kept = Fraction(stream.average_rate), [i for i in range(60) if i not in dropped]
    landing = {}
    for j in kept:
        landing.setdefault(math.floor(Fraction(j, 25) * fps + Fraction(1, 2)), j)
    n = num_frames(path)
    assert n == max(landing) + 1
    shown = [landing[max(k for k in landing if k <= i)] for i in range(n)]
    assert indices_of(read_frames(path, list(range(n)))) == shown
    assert indices_of(read_frames(path, [n - 1, 40, 2])) == [shown[n - 1], shown[40], shown[2]]


@pytest.mark.parametrize("filename, codec", [("v.avi", "mjpeg"), ("v.webm", "libvpx-vp9")])
def test_a_lying_container_is_counted_by_decoding(tmp_path, filename, codec):
    """Cut in half, these files still claim 90 frames in their headers."""
    path = write_index_video(tmp_path / filename, 90, codec=codec)
    data = open(path, "rb").read()
    cut = tmp_path / f"cut_{filename}"
    cut.write_bytes(data[: len(data) // 2])
    container = av.open(str(cut))
    claimed = container.streams.video[0].frames or round(container.duration / 1e6 * 25)
    assert claimed == 90
    real = 0  # what is really there: decode the whole file, naively
    try:
        for _ in av.open(str(cut)).decode(video=0):
            real += 1
    except av.error.FFmpegError:
        pass
    assert 20 < real < 60
    n = num_frames(cut)
    assert n == real
    assert indices_of(read_frames(cut, [0, n // 2, n - 1])) == [0, n // 2, n - 1]


def test_indices_past_the_end_repeat_the_last_frame(tmp_path):
    path = write_index_video(tmp_path / "short.mp4", 20)
    assert indices_of(read_frames(path, [18, 19, 25, 30, 0])) == [18, 19, 19, 19, 0]


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "truncated", "no_video"])
def test_unreadable_files_raise_video_decode_error(tmp_path, kind):
    path = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not a video at all\n" * 50)
    elif kind == "truncated":  # moov atom at the end: cut off
        data = open(write_index_video(tmp_path / "good.mp4", 60), "rb").read()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "no_video":
        with av.open(str(path), "w") as container:
            sound = container.add_stream("aac", rate=16000)
            for packet in sound.encode(None):
                container.mux(packet)
    with pytest.raises(VideoDecodeError):
        num_frames(path)
    with pytest.raises(VideoDecodeError):
        read_frames(path, [0, 30, 59])


def test_bad_arguments(tmp_path):
    path = write_index_video(tmp_path / "v.mp4", 10)
    with pytest.raises(ValueError, match="backend"):
        read_frames(path, [0], backend="decord")
    with pytest.raises(ValueError):
        read_frames(path, [-1])
    with pytest.raises(ValueError):
        read_frames(path, [])


@pytest.mark.skipif(torchcodec_available(), reason="torchcodec is installed")
def test_asking_for_torchcodec_without_it_is_a_clear_error(tmp_path):
    path = write_index_video(tmp_path / "v.mp4", 10)
    with pytest.raises(UserError, match="torchcodec"):
        read_frames(path, [0], backend="torchcodec")
    assert indices_of(read_frames(path, [4], backend="auto")) == [4]  # auto falls back to PyAV


@pytest.mark.skipif(not torchcodec_available(), reason="torchcodec not installed")
@pytest.mark.parametrize("name", ["h264", "vp9", "mjpeg"])
def test_torchcodec_matches_pyav(tmp_path, name):
    filename, kwargs = VIDEOS[name]
    path = write_index_video(tmp_path / filename, 60, **kwargs)
    indices = [50, 3, 3, 17, 59]
    assert indices_of(read_frames(path, indices, backend="torchcodec")) == indices


@pytest.mark.parametrize("name", VIDEOS)
def test_reused_converter_gives_pyav_pixels(tmp_path, name):
    """The one swscale converter reused across frames and files gives exactly PyAV's own RGB pixels."""
    from zeroi2v.data.decode import _to_rgb

    filename, kwargs = VIDEOS[name]
    for i, size in enumerate(({}, {"height": 32, "width": 40})):  # another size, the same converter
        path = write_index_video(tmp_path / f"{i}{filename}", 6, **{**kwargs, **size})
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                assert np.array_equal(_to_rgb(frame), frame.to_ndarray(format="rgb24"))


def test_decoding_in_a_forked_worker_after_the_parent_decoded(tmp_path):
    """DataLoader workers are forked from a process that has already decoded (eval, predict): the
    converter it holds must not be reused there (its swscale threads are not in the child)."""
    path = write_index_video(tmp_path / "v.mp4", 12)
    read_frames(path, np.arange(12))
    loader = torch.utils.data.DataLoader(
        list(range(4)),
        batch_size=1,
        num_workers=2,
        collate_fn=lambda b: read_frames(path, np.arange(12)),
        multiprocessing_context="fork",
        timeout=60,
    )
    assert all(indices_of(frames) == list(range(12)) for frames in loader)


# Keyframe skipping: files with short keyframe intervals, B-frames, open GOPs, VFR, and an MP4 whose
# index lost its keyframe table. Each must decode to exactly the frames of a decode from the start.
def _open_gop_video(path, num_frames: int) -> str:
    """x264 with open GOPs: keyframes that are not IDR, B-frames before them referring across."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"g": "10", "crf": "12", "x264-params": "open-gop=1:bframes=3:scenecut=0"}
        for i in range(num_frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(index_frame(i, 48, 64), format="rgb24")))
        container.mux(stream.encode())
    return str(path)


def _without_keyframe_table(path) -> str:
    """The same MP4 with its sync-sample box (stss) blanked: demuxers then take every frame for a keyframe."""
    data = open(path, "rb").read()
    assert data.count(b"stss") == 1
    out = str(path).replace(".mp4", "_nostss.mp4")
    open(out, "wb").write(data.replace(b"stss", b"free"))
    return out


SKIPPING = {
    "gop4": lambda p: write_index_video(p, 120, gop=4),
    "gop6_bframes": lambda p: write_index_video(p, 120, gop=6, bframes=True),
    "gop5_vfr": lambda p: write_index_video(p, 120, gop=5, vfr=True),
    "gop5_gaps": lambda p: write_index_video(p, 120, gop=5, drop=(9, 10, 11, 40, 41, 65, 100)),
    "open_gop": lambda p: _open_gop_video(p, 120),
    "vp9_gop5": lambda p: write_index_video(str(p).replace(".mp4", ".webm"), 120, codec="libvpx-vp9", gop=5),
    "mpeg4_gop5": lambda p: write_index_video(p, 120, codec="mpeg4", gop=5),
    "no_keyframe_table": lambda p: _without_keyframe_table(write_index_video(p, 120, gop=8, bframes=True)),
}


def _reference(path) -> list[np.ndarray]:
    """Frame i = the frame shown at index i, from a plain decode of every frame (no seeking, no skipping)."""
    stream = av.open(str(path)).streams.video[0]
    fps, start = Fraction(stream.average_rate), stream.start_time or 0
    shown = {}
    for frame in av.open(str(path)).decode(video=0):
        index = math.floor((frame.pts - start) * Fraction(stream.time_base) * fps + Fraction(1, 2))
        shown.setdefault(index, frame.to_ndarray(format="rgb24"))
    return [shown[max(k for k in shown if k <= i)] for i in range(max(shown) + 1)]


@pytest.mark.parametrize("name", SKIPPING)
def test_skipping_to_keyframes_gives_the_frames_of_a_full_decode(tmp_path, name):
    path = SKIPPING[name](tmp_path / "v.mp4")
    reference = _reference(path)
    n = num_frames(path)
    assert n == len(reference)
    rng = np.random.default_rng(0)
    index_sets = [
        list(range(0, n, 16)),  # dense sampling: one frame every 16
        [int(i) for i in np.linspace(0, n - 1, 8).round()],  # uniform: one frame per segment
        [n - 1, 0, 57, 57, 20],
        *(sorted(rng.choice(n, size=int(rng.integers(2, 10)), replace=False).tolist()) for _ in range(6)),
    ]
    for indices in index_sets:
        frames = read_frames(path, indices, backend="pyav").numpy()
        for frame, i in zip(frames, indices, strict=True):
            assert np.array_equal(frame, reference[i]), (name, indices, i)


def test_skipping_decodes_from_the_keyframe_before_each_sampled_frame(tmp_path, monkeypatch):
    """With a keyframe every 4 frames, frames 2, 41 and 83 need at most 3 + 2 + 4 decoded frames, not 84."""
    from zeroi2v.data import decode

    path = write_index_video(tmp_path / "v.mp4", 120, gop=4)
    decoded = []
    add = decode._Collector.add
    monkeypatch.setattr(decode._Collector, "add", lambda self, frame: (decoded.append(frame.pts), add(self, frame)))
    assert indices_of(read_frames(path, [2, 41, 83], backend="pyav")) == [2, 41, 83]
    assert len(decoded) <= 12, decoded


def test_a_file_whose_index_lies_about_keyframes_is_decoded_from_the_start(tmp_path):
    from zeroi2v.data import decode

    path = _without_keyframe_table(write_index_video(tmp_path / "v.mp4", 120, gop=8, bframes=True))
    assert indices_of(read_frames(path, [50, 90], backend="pyav")) == [50, 90]
    assert os.fspath(path) in decode._UNRELIABLE  # noticed once, then not tried again
    assert indices_of(read_frames(path, [99, 51], backend="pyav")) == [99, 51]


@pytest.mark.parametrize("name", ["gop5_gaps", "gop6_bframes", "vp9_gop5"])
def test_iter_frames_gives_every_index_as_read_frames_does(tmp_path, name):
    from zeroi2v.data.decode import _to_rgb, iter_frames

    path = SKIPPING[name](tmp_path / "v.mp4")
    n = num_frames(path)
    frames = [(i, _to_rgb(frame)) for i, frame in iter_frames(path)]
    assert [i for i, _ in frames] == list(range(n))
    assert np.array_equal(np.stack([f for _, f in frames]), read_frames(path, np.arange(n)).numpy())
    with pytest.raises(VideoDecodeError):
        list(iter_frames(tmp_path / "missing.mp4"))
