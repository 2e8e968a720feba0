"""Clips/s of the seeking frame reader vs decoding the whole video, on a generated H.264 video.

    python -m benchmarks.decode                      # writes docs/benchmarks_decode.md
    python -m benchmarks.decode --rounds 3 --out -   # print only

One "clip" is what the training loader does per video: count the frames (`num_frames`), draw a
dense 8x16 clip at a random offset (MMAction2 train sampling), decode those 8 frames. The naive
reader decodes every frame to RGB, stacks them and indexes the clip (what `read_video`-style
loaders do). Both use PyAV with the same threading. Runs are interleaved (A, B, A, B, ...) so
machine noise hits both alike; the table reports medians over rounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import av
import numpy as np
import torch

from zeroi2v.data.decode import num_frames, open_video, read_frames
from zeroi2v.data.sampling import sample_indices
from zeroi2v.loader_bench import write_test_video
from zeroi2v.timing import interleaved_times


def write_video(path, seconds: float, fps: int, width: int, height: int, gop: int | None) -> str:
    """A smooth random scene panning 3 px/frame with a bouncing square (`zeroi2v.loader_bench.write_test_video`)."""
    return write_test_video(path, seconds, fps, width, height, gop)


def sampler_clip(path, rng) -> torch.Tensor:
    indices = sample_indices(num_frames(path, "pyav"), 8, "dense", 16, train=True, rng=rng)
    return read_frames(path, indices.reshape(-1), backend="pyav")


def naive_clip(path, rng) -> torch.Tensor:
    container, stream = open_video(path)  # same threading settings as the sampler
    with container:
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
    indices = sample_indices(len(frames), 8, "dense", 16, train=True, rng=rng)
    return torch.from_numpy(frames[indices.reshape(-1)])


def decode_all_clip(path, rng) -> torch.Tensor:
    """Decode every frame but keep (convert to RGB) only the clip's: isolates the seek-and-stop gain."""
    indices = sample_indices(num_frames(path, "pyav"), 8, "dense", 16, train=True, rng=rng).reshape(-1)
    wanted, out = set(indices.tolist()), {}
    container, stream = open_video(path)
    with container:
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                out[i] = frame.to_ndarray(format="rgb24")
    return torch.from_numpy(np.stack([out[i] for i in indices.tolist()]))


def keyframes(path) -> list[int]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        return [round(p.pts * stream.time_base * rate) for p in container.demux(stream) if p.is_keyframe and p.size]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return (
        f"{cpu}, {len(os.sched_getaffinity(0))} usable cores, {platform.system()} {platform.release()}; "
        f"1-min load average {load:.1f} at the end of the run (other jobs share the machine, so absolute "
        "numbers are noisy; the interleaved ratios less so)"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--size", default="568x320", help="WIDTHxHEIGHT")
    parser.add_argument("--gops", default="default,60", help="keyframe intervals to test; 'default' = x264's (250)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--clips", type=int, default=8, help="clips per timed run")
    parser.add_argument("--out", default="docs/benchmarks_decode.md", help="markdown file, or - for stdout only")
    args = parser.parse_args(argv)
    width, height = map(int, args.size.lower().split("x"))
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for gop in args.gops.split(","):
            g = None if gop == "default" else int(gop)
            path = write_video(Path(tmp) / f"bench_{gop}.mp4", args.seconds, args.fps, width, height, g)
            n, keys = num_frames(path), keyframes(path)
            methods = {"sampler": sampler_clip, "decode_all": decode_all_clip, "naive": naive_clip}
            clips = {name: fn(path, np.random.default_rng(0)) for name, fn in methods.items()}
            assert all(torch.equal(clips["sampler"], clip) for clip in clips.values())  # same frames
            rngs = {name: np.random.default_rng(0) for name in methods}  # the same clips for every reader

            def clips_of(name, methods=methods, path=path, rngs=rngs):
                for _ in range(args.clips):
                    methods[name](path, rngs[name])

            times = interleaved_times({name: (lambda n=name: clips_of(n)) for name in methods}, args.rounds, warmup=0)
            runs = {name: [args.clips / t for t in v] for name, v in times.items()}  # clips/s per run
            med = {name: statistics.median(v) for name, v in runs.items()}
            rows.append((f"x264 {'default keyint (250)' if g is None else f'keyint {g}'}", n, len(keys), med))
            print(
                f"{rows[-1][0]}: {n} frames, {len(keys)} keyframes; "
                + "; ".join(
                    f"{name} {med[name]:.2f} clips/s (runs {', '.join(f'{v:.2f}' for v in runs[name])})"
                    for name in methods
                )
                + f"; ratio {med['sampler'] / med['naive']:.2f}x",
                flush=True,
            )
    table = [
        "| video | frames | keyframes | seek-and-stop sampler | decode all, RGB of 8 | naive: all to RGB, index "
        "| sampler / naive | sampler / decode all |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    table += [
        f"| {name} | {n} | {k} | {m['sampler']:.2f} | {m['decode_all']:.2f} | {m['naive']:.2f} | "
        f"**{m['sampler'] / m['naive']:.1f}x** | {m['sampler'] / m['decode_all']:.1f}x |"
        for name, n, k, m in rows
    ]
    command = "python -m benchmarks.decode" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    text = "\n".join(
        [
            "## Decoding",
            "",
            f"Dense 8x16 training clips (random offset, MMAction2 `SampleFrames`) from a generated "
            f"{args.seconds:g} s, {width}x{height}, {args.fps} fps H.264 MP4 (a smooth random scene panning "
            "3 px/frame, crf 23, "
            "x264 defaults otherwise: B-frames, scene-cut keyframes). "
            "One clip = `num_frames` (container count, checked by demuxing the tail) + `sample_indices` + "
            "`read_frames` (seek to the keyframe before the first needed frame, stop after the last, convert only "
            "the 8 needed frames to RGB). Naive = decode every frame to RGB, stack, index (what `read_video`-style "
            'loaders do). "Decode all, RGB of 8" decodes every frame but converts only the clip\'s, to separate the '
            "seek-and-stop gain from the conversion saving. All PyAV, same threading (`thread_type=AUTO`); the three "
            f"readers return identical frames. Interleaved runs, median of {args.rounds} runs of {args.clips} clips "
            "each; numbers are clips/s.",
            "",
            *table,
            "",
            "A clip spans (8-1)·16+1 = 113 frames, so the sampler still decodes from the keyframe before the clip to "
            "its last frame: the seek-and-stop gain over decoding everything grows with shorter keyframe intervals "
            "and is smallest with x264's default 250-frame interval, where most seeks land on frame 0 and the saving "
            "is the frames after the clip. Most of the gain over the naive reader is not converting (and holding) "
            "300 RGB frames to use 8.",
            "",
            f"- machine: {machine()}",
            f"- versions: Python {platform.python_version()}, torch {torch.__version__}, PyAV {av.__version__} "
            f"(libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))}), numpy {np.__version__}",
            f"- command: `{command}`",
            "",
        ]
    )
    print(text)
    if args.out != "-":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        from zeroi2v.fileio import atomic_write_text

        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
        from zeroi2v.bench import assemble

        assembled = Path(args.out).parent / "benchmarks.md"
        assemble(assembled)  # docs/benchmarks.md includes this section
        print(f"wrote {assembled}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
