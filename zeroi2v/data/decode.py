"""Decode only the frames a clip needs, with PyAV (torchcodec when installed and asked for).

Frame i of a video is the frame shown at time i / fps (fps = the stream's average rate). The decoder
seeks to the keyframe before the first needed frame and stops after the last one, instead of decoding
the whole video. Variable-frame-rate videos are indexed by time the same way: a needed index that no
frame lands on takes the most recent earlier frame. A container that claims more frames than it holds
(truncated files, wrong headers) is handled by clamping to the last frame actually decoded.
"""
from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import torch

BACKENDS = ("auto", "pyav", "torchcodec")
SEEK_MIN_FRAMES = 32  # closer than this to the start, decoding from the start is as cheap as seeking


class VideoDecodeError(Exception):
    """The file is missing, empty, truncated beyond use, or not a video."""


def _open(path):
    import av

    if not os.path.isfile(path):
        raise VideoDecodeError(f"no such file: {path}")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(f"empty file: {path}")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoDecodeError(f"cannot open {path}: {e}") from None
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"no video stream in {path}")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _fps(stream) -> Fraction:
    rate = stream.average_rate or stream.base_rate or stream.guessed_rate
    if not rate:
        raise VideoDecodeError("stream has no frame rate")
    return Fraction(rate)


def num_frames(path, backend: str = "auto") -> int:
    """Frame count from the container (or its duration × fps); decodes only when neither is known."""
    container, stream = _open(path)
    try:
        if stream.frames and stream.frames > 0:
            return int(stream.frames)
        fps = _fps(stream)
        if stream.duration and stream.time_base:
            return max(1, int(round(stream.duration * stream.time_base * fps)))
        if container.duration:
            return max(1, int(round(container.duration / 1_000_000 * fps)))
        return sum(1 for _ in container.decode(stream))
    except VideoDecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - FFmpeg errors of all kinds mean "not readable"
        raise VideoDecodeError(f"cannot read {path}: {e}") from None
    finally:
        container.close()


def read_frames(path, indices, backend: str = "auto") -> torch.Tensor:
    """RGB frames at `indices` (any order, repeats allowed) as uint8 (len(indices), H, W, 3)."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size == 0 or indices.min() < 0:
        raise ValueError(f"frame indices must be non-negative, got {indices}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown decode backend {backend!r}; choose from {BACKENDS}")
    if backend in ("auto", "torchcodec") and _torchcodec_available():
        try:
            return _read_torchcodec(path, indices)
        except VideoDecodeError:
            raise
        except Exception:  # noqa: BLE001 - fall back to PyAV on anything torchcodec cannot do
            if backend == "torchcodec":
                raise
    return _read_pyav(path, indices)


def _read_pyav(path, indices: np.ndarray) -> torch.Tensor:
    wanted = set(int(i) for i in indices)
    first, last = min(wanted), max(wanted)
    container, stream = _open(path)
    try:
        frames = _decode_range(container, stream, wanted, first, last, seek=first >= SEEK_MIN_FRAMES)
        if frames and min(frames) > first:  # the seek landed after the first needed frame: start over
            container.seek(0)
            frames = _decode_range(container, stream, wanted, first, last, seek=False)
    except VideoDecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt data surfaces as many FFmpeg error types
        raise VideoDecodeError(f"cannot decode {path}: {e}") from None
    finally:
        container.close()
    if not frames:
        raise VideoDecodeError(f"no decodable frames in {path}")
    return torch.from_numpy(np.stack([_nearest(frames, int(i)) for i in indices]))


def _decode_range(container, stream, wanted, first, last, seek: bool) -> dict[int, np.ndarray]:
    """Decode from (the keyframe before) `first` up to `last`; returns {index: RGB frame}.

    Only wanted frames are converted to RGB. A wanted index that no frame lands on (VFR gaps, or past
    the real end of a truncated video) gets the most recent earlier frame.
    """
    fps, tb = _fps(stream), stream.time_base
    start = stream.start_time or 0
    if seek:
        target = start + int(Fraction(first) / fps / tb)
        container.seek(target, stream=stream, backward=True, any_frame=False)
    todo = sorted(wanted)
    out: dict[int, np.ndarray] = {}
    pos, count, previous, previous_rgb = 0, 0, None, None

    def rgb_of_previous():
        nonlocal previous_rgb
        if previous_rgb is None:
            previous_rgb = previous.to_ndarray(format="rgb24")
        return previous_rgb

    for frame in container.decode(stream):
        index = count if frame.pts is None else int(round(float((frame.pts - start) * tb * fps)))
        count += 1
        while pos < len(todo) and todo[pos] < index:  # skipped over: the earlier frame stands in
            if previous is not None:
                out[todo[pos]] = rgb_of_previous()
            pos += 1
        if pos < len(todo) and todo[pos] == index:
            out[index] = frame.to_ndarray(format="rgb24")
            pos += 1
        previous, previous_rgb = frame, out.get(index)
        if pos == len(todo) or index > last:
            break
    if previous is not None:
        for index in todo[pos:]:  # the container promised more frames than it holds
            out[index] = rgb_of_previous()
    return out


def _nearest(frames: dict[int, np.ndarray], index: int) -> np.ndarray:
    if index in frames:
        return frames[index]
    earlier = [i for i in frames if i <= index]
    return frames[max(earlier)] if earlier else frames[min(frames)]


def _torchcodec_available() -> bool:
    try:
        import torchcodec.decoders  # noqa: F401  (needs the system FFmpeg libraries)
        return True
    except Exception:  # noqa: BLE001 - ImportError or a missing shared library
        return False


def _read_torchcodec(path, indices: np.ndarray) -> torch.Tensor:
    from torchcodec.decoders import VideoDecoder

    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        raise VideoDecodeError(f"missing or empty file: {path}")
    decoder = VideoDecoder(str(path), dimension_order="NHWC")
    n = len(decoder)
    batch = decoder.get_frames_at(indices=[min(int(i), n - 1) for i in indices])
    return batch.data
