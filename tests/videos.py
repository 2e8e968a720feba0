"""Test videos written with PyAV whose frames can be identified after decoding.

Each frame shows its own index as a bar code that survives lossy compression: `BITS` vertical bars,
white = 1, black = 0, most significant bit on the left. `read_index` reads it back from an RGB frame.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

BITS = 8  # indices 0..255

# Pixel formats that each encoder accepts for the frames written here.
PIX_FMT = {"mjpeg": "yuvj420p", "ffv1": "yuv420p"}


def index_frame(i: int, height: int, width: int, gray: bool = False) -> np.ndarray:
    """RGB uint8 (height, width, 3) showing `i` as a bar code (a little colour unless `gray`)."""
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    bar = width // BITS
    for b in range(BITS):
        if (i >> (BITS - 1 - b)) & 1:
            frame[:, b * bar : (b + 1) * bar] = 255
    if not gray:
        frame[..., 1] //= 2  # so the colour conversion path is exercised
    return frame


def read_index(frame: np.ndarray) -> int:
    """The index drawn by `index_frame`, read from an RGB (H, W, 3) frame (the middle of each bar)."""
    bar = frame.shape[1] // BITS
    value = 0
    for b in range(BITS):
        column = frame[:, b * bar + bar // 4 : (b + 1) * bar - bar // 4, 0]
        value = (value << 1) | int(column.mean() > 127)
    return value


def write_index_video(
    path,
    num_frames: int,
    height: int = 48,
    width: int = 64,
    codec: str = "libx264",
    fps: int = 25,
    gray: bool = False,
    vfr: bool = False,
    drop=(),
    gop: int = 12,
    bframes: bool = False,
    audio: bool = False,
    options: dict | None = None,
) -> str:
    """Frames 0..num_frames-1 with their index drawn in.

    gray:    grey pictures; with codec="ffv1" the stream itself is single-channel ("gray" pix_fmt).
    vfr:     timestamps jittered around the nominal rate (a variable-frame-rate file).
    drop:    indices not written at all (gaps in time, as in VFR captures that drop frames).
    gop:     keyframe interval; bframes: let x264 reorder frames (B-frames).
    audio:   add an AAC audio track, as real MP4s have.
    options: container options, e.g. {"movflags": "faststart"}.
    """
    drop = set(drop)
    fine = vfr or bool(drop)  # timestamps in tenths of a frame, so they can be irregular
    tick = Fraction(1, fps * 10) if fine else Fraction(1, fps)
    with av.open(str(path), mode="w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "gray" if gray and codec == "ffv1" else PIX_FMT.get(codec, "yuv420p")
        stream.codec_context.time_base = tick
        if codec == "libx264":
            stream.options = {"g": str(gop), "crf": "12", "bf": "3" if bframes else "0"}
        elif codec == "mpeg4":
            stream.options = {"g": str(gop)}
            stream.bit_rate = 2_000_000
        elif codec == "libvpx-vp9":
            stream.options = {"g": str(gop), "crf": "20", "b": "0"}
        sound = container.add_stream("aac", rate=16000) if audio else None
        for i in range(num_frames):
            if i in drop:
                continue
            frame = av.VideoFrame.from_ndarray(index_frame(i, height, width, gray), format="rgb24")
            frame.pts = (i * 10 + (3 if vfr and i % 3 == 1 else 0)) if fine else i
            frame.time_base = tick
            for packet in stream.encode(frame):
                container.mux(packet)
            if sound is not None:
                samples = np.zeros((1, 16000 // fps), dtype=np.float32)
                chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 16000, i * (16000 // fps)
                for packet in sound.encode(chunk):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            for packet in sound.encode():
                container.mux(packet)
    return str(path)
