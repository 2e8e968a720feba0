"""Decoding real files written by the tests: the frames returned are exactly the ones asked for."""

import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from tests.videos import read_index, write_index_video
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
