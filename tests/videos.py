"""Test videos written with PyAV: each frame shows its own index as a bar code that survives
compression (8 vertical bars, black = 0, white = 1, most significant bit on the left)."""
from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

BITS = 8


def index_frame(i: int, height: int, width: int, gray: bool = False) -> np.ndarray:
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    bar = width // BITS
    for b in range(BITS):
        if (i >> (BITS - 1 - b)) & 1:
            frame[:, b * bar:(b + 1) * bar] = 255
    if not gray:
        frame[..., 1] //= 2  # a little colour so the RGB path is exercised
    return frame


def read_index(frame: np.ndarray) -> int:
    width = frame.shape[1]
    bar = width // BITS
    value = 0
    for b in range(BITS):
        column = frame[:, b * bar + bar // 4:(b + 1) * bar - bar // 4, 0]
        value = (value << 1) | int(column.mean() > 127)
    return value


def write_index_video(path, num_frames: int, height: int = 48, width: int = 64, codec: str = "libx264",
                      fps: int = 25, gray: bool = False, vfr: bool = False, gop: int = 12) -> str:
    """Frames 0..num_frames-1 with their index drawn in; `vfr` jitters timestamps (irregular gaps)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = {"mjpeg": "yuvj420p", "libvpx-vp9": "yuv420p"}.get(codec, "gray" if gray and codec == "ffv1" else "yuv420p")
        if codec in ("libx264", "mpeg4"):
            stream.options = {"g": str(gop), "crf": "10"} if codec == "libx264" else {"g": str(gop)}
            if codec == "mpeg4":
                stream.bit_rate = 2_000_000
        if vfr:
            stream.codec_context.time_base = Fraction(1, fps * 10)
            stream.options = {**dict(stream.options), "bf": "0"}
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i, height, width, gray), format="rgb24")
            if vfr:
                frame.pts = i * 10 + (3 if i % 3 == 1 else 0)  # irregular spacing around the nominal rate
                frame.time_base = Fraction(1, fps * 10)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)
