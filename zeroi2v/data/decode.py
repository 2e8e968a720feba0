"""Decode only the frames a clip needs, with PyAV (torchcodec when it is installed).

Frame i of a video is the frame shown at time i / fps (fps = the stream's average rate), so constant
and variable frame rate videos are indexed the same way: a frame belongs to the index nearest to its
timestamp × fps (the first one wins when two land on the same index), and an index that no frame
lands on (a VFR gap) takes the most recent earlier frame.

`read_frames` seeks to the keyframe before the first needed frame and stops after the last one; between
needed frames it reads packets ahead (demuxing does not decode) and restarts decoding at a keyframe
whenever one lies at or before the next needed frame. So a clip costs, per sampled frame, the frames
from the keyframe before it, and videos with short keyframe intervals (`zeroi2v prepare --format
video`) decode a few frames per sampled frame. The frames are exactly those of a decode from the start;
a file whose keyframe flags are wrong (an MP4 without a keyframe table flags every frame) is noticed
when a restart does not begin with a key frame, and is decoded from the start instead.

`num_frames` trusts the container's frame count only after checking it cheaply: it seeks near the
claimed end and reads (demuxes, without decoding) the packets there. When they are not where the
header says (a truncated file, a WebM whose duration was written for a longer stream), the count is
taken by decoding the whole video, so the sampler never asks for frames that do not exist.
"""

from __future__ import annotations

import functools
import os
import threading
from fractions import Fraction

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from zeroi2v.errors import UserError

BACKENDS = ("auto", "pyav", "torchcodec")
SEEK_MIN_FRAMES = 32  # closer than this to the start, decoding from the start is as cheap as seeking
REORDER_FRAMES = 16  # more than any decoder's reordering delay (H.264 allows 16)


class VideoDecodeError(Exception):
    """The file is missing, empty, truncated beyond use, or not a video."""


class _NoTimestamps(Exception):
    """Frames without timestamps cannot be placed after a seek; decode from the start instead."""


def num_frames(path, backend: str = "auto") -> int:
    """Number of frame indices in the video (verified against the stream, see the module docstring).

    The count always comes from PyAV (demuxing is cheap); `backend` is accepted so callers can pass
    the same setting to both functions.
    """
    _check_backend(backend)
    container, stream = open_video(path)
    try:
        claimed = _claimed_frames(container, stream)
        last = _last_packet_index(container, stream, claimed) if claimed else None
        if last is not None and last + 1 >= claimed - 1:  # the stream reaches the claimed end (±1 rounding)
            return last + 1
        container.close()
        container, stream = open_video(path)
        return _count_by_decoding(container, stream, path)
    except VideoDecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - FFmpeg errors of all kinds mean "not readable"
        raise VideoDecodeError(f"cannot read {path}: {e}") from None
    finally:
        container.close()


def read_frames(path, indices, backend: str = "auto") -> torch.Tensor:
    """RGB frames at `indices` (any order, repeats allowed) as uint8 (len(indices), H, W, 3).

    Indices past the real end of the video repeat its last frame (MMAction2's `repeat_last`).
    """
    _check_backend(backend)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size == 0 or indices.min() < 0:
        raise ValueError(f"frame indices must be non-negative and not empty, got {indices.tolist()}")
    if backend == "torchcodec" and not torchcodec_available():
        raise UserError(
            "decode backend 'torchcodec' asked for, but torchcodec cannot be imported "
            "(pip install torchcodec; it needs the system FFmpeg libraries), or use backend auto/pyav"
        )
    if backend != "pyav" and torchcodec_available():
        try:
            return _read_torchcodec(path, indices)
        except VideoDecodeError:
            raise
        except Exception:  # noqa: BLE001 - anything torchcodec cannot do, PyAV gets a go at in auto mode
            if backend == "torchcodec":
                raise
    return _read_pyav(path, indices)


# --- PyAV --------------------------------------------------------------------------------------------
def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown decode backend {backend!r}; choose from {', '.join(BACKENDS)}")


def open_video(path, threads: str = "AUTO"):
    """(container, first video stream) with the decoding settings used here; VideoDecodeError for a
    missing, empty or unreadable file. Close the container (`with container:`).

    threads: FFmpeg's `thread_type`. `read_frames` decodes with "NONE": DataLoader workers are the
    parallelism, and frame threads add CPU time at every (re)start of decoding.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoDecodeError(f"no such file: {path}")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(f"empty file: {path}")
    try:
        container = av.open(path)
    except Exception as e:  # noqa: BLE001 - av.error.*, OSError, UnicodeDecodeError on odd headers...
        raise VideoDecodeError(f"cannot open {path}: {e}") from None
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"no video stream in {path}")
    stream = container.streams.video[0]
    stream.thread_type = threads
    return container, stream


def _fps(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise VideoDecodeError("video stream has no frame rate")
    return Fraction(rate)


class _Indexer:
    """The frame index a timestamp (in stream time base) falls on, halves rounding up.

    Exact integer arithmetic: index = floor((ts - start) · time_base · fps + 1/2), with the rational
    time_base · fps = num / den computed once per stream (Fraction arithmetic per frame costs more
    than decoding a small frame).
    """

    def __init__(self, stream, fps: Fraction):
        rate = Fraction(stream.time_base) * fps
        self.start = stream.start_time or 0
        self.num, self.den = 2 * rate.numerator, 2 * rate.denominator

    def __call__(self, ts: int) -> int:
        return ((ts - self.start) * self.num + self.den // 2) // self.den


def _claimed_frames(container, stream) -> int | None:
    """What the headers say: the frame count, or duration × fps; None when they say nothing."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames)
    fps = _fps(stream)
    if stream.duration and stream.time_base:
        return max(1, int(round(stream.duration * stream.time_base * fps)))
    if container.duration:
        return max(1, int(round(Fraction(container.duration, 1_000_000) * fps)))
    return None


def _seek(container, stream, index: int) -> None:
    fps = _fps(stream)
    target = (stream.start_time or 0) + int(Fraction(index) / fps / stream.time_base)
    container.seek(target, stream=stream, backward=True, any_frame=False)


def _last_packet_index(container, stream, claimed: int) -> int | None:
    """Index of the last packet after seeking to the keyframe before the claimed last frame (when the index
    has no keyframe table, any packet counts as one: the seek goes a reordering delay earlier)."""
    index_of, last = _Indexer(stream, _fps(stream)), None
    if claimed - 1 >= SEEK_MIN_FRAMES:  # a little earlier: the last frame's packet may come before a B-frame's
        _seek(container, stream, claimed - 1 - REORDER_FRAMES)
    try:
        for packet in container.demux(stream):
            ts = packet.pts if packet.pts is not None else packet.dts
            if packet.size and ts is not None:
                index = index_of(ts)
                last = index if last is None else max(last, index)
    except Exception:  # noqa: BLE001 - data ends early: that is what we are checking for
        return None
    return last


def _count_by_decoding(container, stream, path) -> int:
    index_of, count, last = _Indexer(stream, _fps(stream)), 0, None
    try:
        for frame in container.decode(stream):
            last = count if frame.pts is None else index_of(frame.pts)
            count += 1
    except Exception:  # noqa: BLE001 - a truncated tail: the frames before it count
        pass
    if last is None:
        raise VideoDecodeError(f"no decodable frames in {path}")
    return max(last + 1, 1)


def iter_frames(path):
    """(index, av.VideoFrame) for every frame index of the video in order, from one decode from the start:
    frame i is what `read_frames(path, [i])` gives (VFR gaps repeat the earlier frame, `num_frames`
    indices in all), without holding the video in memory. For copying a whole video (`zeroi2v prepare`)."""
    total = num_frames(path)
    container, stream = open_video(path, threads="NONE")
    index_of, count, next_index, previous = _Indexer(stream, _fps(stream)), 0, 0, None
    try:
        for frame in container.decode(stream):
            index = count if frame.pts is None else index_of(frame.pts)
            count += 1
            while next_index < min(index, total):  # a gap (or frames before the first one): the earlier frame
                yield next_index, previous if previous is not None else frame
                next_index += 1
            if index == next_index and index < total:
                yield index, frame
                next_index += 1
            previous = frame
            if next_index >= total:
                break
    except Exception as e:  # noqa: BLE001 - a corrupt tail ends the video, as in read_frames
        if previous is None:
            raise VideoDecodeError(f"cannot decode {path}: {e}") from None
    finally:
        container.close()
    if previous is None:
        raise VideoDecodeError(f"no decodable frames in {path}")
    for index in range(next_index, total):  # past the end of what could be decoded
        yield index, previous


# files whose keyframe flags lied: decoded from the start from then on (insertion-ordered, bounded)
_UNRELIABLE: dict[str, None] = {}
_UNRELIABLE_MAX = 10_000


def _read_pyav(path, indices: np.ndarray) -> torch.Tensor:
    wanted = sorted(set(indices.tolist()))
    key = os.fspath(path)
    skip = key not in _UNRELIABLE
    container, stream = open_video(path, threads="NONE")
    try:
        seek = skip and wanted[0] >= SEEK_MIN_FRAMES
        try:
            frames = _decode_range(container, stream, wanted, seek, skip)
        except _Unreliable:
            _remember_unreliable(key)
            frames = None
        except _NoTimestamps:
            frames = None
        if frames is None or (seek and min(frames) > wanted[0]):  # the seek landed past the first needed frame
            container.close()
            container, stream = open_video(path, threads="NONE")
            frames = _decode_range(container, stream, wanted, seek=False, skip=False)
    except VideoDecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt data surfaces as many FFmpeg error types
        raise VideoDecodeError(f"cannot decode {path}: {e}") from None
    finally:
        container.close()
    if not frames:
        raise VideoDecodeError(f"no decodable frames in {path}")
    return torch.from_numpy(np.stack([frames[i] for i in indices.tolist()]))


def _remember_unreliable(key: str) -> None:
    if len(_UNRELIABLE) >= _UNRELIABLE_MAX:
        del _UNRELIABLE[next(iter(_UNRELIABLE))]
    _UNRELIABLE[key] = None


_local = threading.local()


def _to_rgb(frame) -> np.ndarray:
    """RGB pixels of a decoded frame through one reused swscale converter per thread.

    `frame.to_ndarray(format="rgb24")` builds a new converter for every frame, which costs far more
    than decoding a small frame (measured 5 ms vs 0.3 ms per 32x32 frame); the pixels are identical.
    Single-threaded: DataLoader workers are the parallelism.
    """
    if getattr(_local, "pid", None) != os.getpid():  # not one inherited through fork (DataLoader workers)
        _local.pid, _local.reformatter = os.getpid(), VideoReformatter()
    # threads=1: swscale's own thread pool does not survive fork (workers of a parent that decoded hang)
    return _local.reformatter.reformat(frame, format="rgb24", interpolation="BILINEAR", threads=1).to_ndarray()


class _Unreliable(Exception):
    """Decoding from a packet flagged as a keyframe did not start with that key frame (an MP4 without a
    keyframe table flags every frame): decode from the start without skipping instead."""


class _Collector:
    """Decoded frames (presentation order) -> {wanted index: RGB}, as a decode from the start gives them.

    A wanted index that no frame lands on gets the most recent earlier frame; indices past the last
    decodable frame get that frame (`finish`). After a jump to a keyframe (`jumped_to`), frames before
    it are dropped (an open GOP's leading frames) and the next one must be that key frame.
    """

    def __init__(self, wanted: list[int], index_of, moved: bool):
        self.wanted, self.index_of, self.moved = wanted, index_of, moved
        self.out: dict[int, np.ndarray] = {}
        self.pos = self.count = 0
        self.previous, self.previous_rgb = None, None
        self.jumped_to: int | None = None

    @property
    def done(self) -> bool:
        return self.pos == len(self.wanted)

    @property
    def next_wanted(self) -> int:
        return self.wanted[self.pos]

    def add(self, frame) -> None:
        if self.done:
            return
        if frame.pts is None and self.moved:  # without timestamps, frames are placed by counting from the start
            raise _NoTimestamps
        index = self.count if frame.pts is None else self.index_of(frame.pts)
        self.count += 1
        if self.jumped_to is not None:
            if index < self.jumped_to:
                return
            if index != self.jumped_to or not frame.key_frame:
                raise _Unreliable
            self.jumped_to = None
        wanted = self.wanted
        while (
            self.pos < len(wanted) and wanted[self.pos] < index
        ):  # skipped over (VFR gap): the earlier frame stands in
            if self.previous is not None:
                self.previous_rgb = _to_rgb(self.previous) if self.previous_rgb is None else self.previous_rgb
                self.out[wanted[self.pos]] = self.previous_rgb
            self.pos += 1
        self.previous, self.previous_rgb = frame, None
        if self.pos < len(wanted) and wanted[self.pos] == index:
            self.previous_rgb = self.out[index] = _to_rgb(frame)
            self.pos += 1

    def finish(self) -> dict[int, np.ndarray]:
        if self.previous is not None:
            for index in self.wanted[self.pos :]:  # past the end of what could be decoded
                self.previous_rgb = _to_rgb(self.previous) if self.previous_rgb is None else self.previous_rgb
                self.out[index] = self.previous_rgb
        return self.out


def _decode_range(container, stream, wanted: list[int], seek: bool, skip: bool = True) -> dict[int, np.ndarray]:
    """{index: RGB frame} for the sorted `wanted` indices, decoding only what they need.

    seek: start at the keyframe before wanted[0]. skip: packets are read ahead (demuxing is cheap) and
    held back from the decoder until the next wanted frame's packet shows up; a keyframe at or before
    that frame drops them, and decoding restarts there (a flushed decoder, exactly as after a seek).
    So a clip decodes from the keyframe before each sampled frame, not through every frame between.
    """
    index_of = _Indexer(stream, _fps(stream))
    collect = _Collector(wanted, index_of, moved=seek)
    codec = stream.codec_context
    if seek:
        _seek(container, stream, wanted[0])
    pending: list = []  # packets read and not yet decoded
    fed, behind, started = False, -1, not seek  # behind: the highest frame index read since the last (re)start
    try:
        for packet in container.demux(stream):
            if not packet.size:
                continue
            ts = packet.pts if packet.pts is not None else packet.dts
            index = None if ts is None else index_of(ts)
            skip = skip and index is not None
            if not started:  # the packet the seek landed on
                if index is None or index > wanted[0]:
                    raise _Unreliable
                started, collect.jumped_to = True, index
            elif skip and packet.is_keyframe and behind < index <= collect.next_wanted:
                if fed:  # drain what the decoder holds, then start it afresh at this keyframe
                    _feed(codec, [None], collect)
                    codec.flush_buffers()
                pending, fed, behind = [], False, -1
                collect.moved, collect.jumped_to = True, index
            pending.append(packet)
            behind = max(behind, index if index is not None else behind)
            if not skip or index >= collect.next_wanted:
                _feed(codec, pending, collect)
                pending, fed = [], True
            if collect.done:
                break
        else:
            _feed(codec, [*pending, None], collect)  # the end of the stream: drain the decoder
    except (_NoTimestamps, _Unreliable):
        raise
    except Exception:  # noqa: BLE001 - a corrupt tail ends the video; no frame at all is an error below
        if collect.previous is None:
            raise
    return collect.finish()


def _feed(codec, packets: list, collect: _Collector) -> None:
    """Decode `packets` (None drains the decoder) into `collect`, stopping once it has every wanted frame."""
    for packet in packets:
        for frame in codec.decode(packet):
            collect.add(frame)
        if collect.done:
            return


# --- torchcodec (optional) ---------------------------------------------------------------------------
@functools.cache
def torchcodec_available() -> bool:
    try:
        import torchcodec
        import torchcodec.decoders  # noqa: F401  (older releases fail here without the system FFmpeg libraries)

        # newer ones import without FFmpeg (for their image decoders) and say so in ffmpeg_major_version
        return getattr(torchcodec, "ffmpeg_major_version", 0) is not None
    except Exception:  # noqa: BLE001 - ImportError, or OSError/RuntimeError for a missing shared library
        return False


def _read_torchcodec(path, indices: np.ndarray) -> torch.Tensor:
    """Index i is the frame shown at i / fps, as with PyAV (for VFR ties torchcodec takes the later frame)."""
    from torchcodec.decoders import VideoDecoder

    path = os.fspath(path)
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise VideoDecodeError(f"missing or empty file: {path}")
    decoder = VideoDecoder(path, dimension_order="NHWC", seek_mode="exact")
    meta = decoder.metadata
    begin, end = meta.begin_stream_seconds or 0.0, meta.end_stream_seconds
    # Just under the rounding boundary (i + 0.5) / fps, so "played at" picks the frame index i rounds to.
    seconds = [min(begin + (i + 0.499) / meta.average_fps, end - 1e-6) for i in indices.tolist()]
    return decoder.get_frames_played_at(seconds=seconds).data
