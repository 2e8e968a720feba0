"""`zeroi2v bench --loader`: the training loader's clips/s (decode + augmentation, N workers) vs the
model's training throughput, and our frame sampler vs torchcodec and decord, on generated videos."""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from zeroi2v.bench_report import env_lines
from zeroi2v.cost_tables import DEFAULT_BACKBONES, model_label, run_child
from zeroi2v.timing import interleaved_times, paired_ratio, rotated


def write_test_video(
    path, seconds: float, fps: int, width: int, height: int, gop: int | None = None, seed: int = 0
) -> str:
    """A smooth random scene panning 3 px/frame with a bouncing square, H.264 (crf 23): content x264 has
    to encode, like real footage. `gop` None: x264's default keyframe interval (250)."""
    from fractions import Fraction

    import av
    import numpy as np

    frames, pan = int(seconds * fps), 3
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(1, height // 16), max(1, (width + pan * frames) // 16), generator=gen)
    scene = torch.nn.functional.interpolate(coarse, size=(height, width + pan * frames), mode="bicubic")
    scene = (scene[0].permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8).numpy()
    side = min(60, min(width, height) // 2)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", **({"g": str(gop)} if gop else {})}
        for i in range(frames):
            frame = scene[:, pan * i : pan * i + width].copy()
            t = i / fps
            x, y = int((width - side) * abs(np.sin(t))), int((height - side) * abs(np.cos(1.3 * t)))
            frame[y : y + side, x : x + side] = 255
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
            picture.pts, picture.time_base = i, Fraction(1, fps)
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def kinetics_like_videos(folder, count: int, seconds: float, short_side: int, fps: int = 30) -> list[str]:
    """`count` 16:9 H.264 files with the given short side (Kinetics is distributed at 340 px or more)."""
    width = int(round(short_side * 16 / 9 / 2)) * 2
    return [
        write_test_video(Path(folder) / f"video_{short_side}_{i}.mp4", seconds, fps, width, short_side, seed=i)
        for i in range(count)
    ]


def loader_clips_per_s(
    paths: list[str],
    workers: int,
    clips: int,
    batch: int = 8,
    backend: str = "pyav",
    frames: int = 8,
    interval: int = 16,
    img_size: int = 224,
    pin_memory: bool = False,
) -> float:
    """Clips/s of zeroi2v's training loader: VideoDataset (train: dense sampling, decode, RandAugment,
    random resized crop, flip, normalise) in a DataLoader with `workers` workers. The first batch
    (worker start-up, frame counting) is not timed."""
    from zeroi2v.data import VideoDataset, collate

    total = batch * (math.ceil(clips / batch) + 1)
    samples = [(paths[i % len(paths)], 0) for i in range(total)]
    dataset = VideoDataset(
        "",
        samples,
        num_frames=frames,
        sampling="dense",
        frame_interval=interval,
        train=True,
        img_size=img_size,
        backend=backend,
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, num_workers=workers, collate_fn=collate, pin_memory=pin_memory, shuffle=False
    )
    it = iter(loader)
    next(it)
    start, seen = time.perf_counter(), 0
    for item in it:
        seen += len(item["label"])
    return seen / (time.perf_counter() - start)


def decoder_readers() -> dict[str, Callable | str]:
    """Readers of a clip's frames (uint8 (8, H, W, 3)) by index, as a training dataset calls them: a
    fresh decoder per clip, the frame count known. A string instead of a reader says why it is missing."""
    from zeroi2v.data.decode import read_frames

    readers: dict[str, Callable | str] = {
        "zeroi2v sampler (PyAV, seek and stop)": lambda path, idx: read_frames(path, idx, backend="pyav")
    }
    try:
        import torchcodec
        from torchcodec.decoders import VideoDecoder

        if getattr(torchcodec, "ffmpeg_major_version", 0) is None:
            raise ImportError("torchcodec cannot load FFmpeg's shared libraries (install FFmpeg 4-8)")

        def torchcodec_reader(mode):
            return lambda path, idx: (
                VideoDecoder(path, seek_mode=mode, dimension_order="NHWC").get_frames_at([int(i) for i in idx]).data
            )

        for mode in ("approximate", "exact"):
            readers[f"torchcodec {torchcodec.__version__} (seek_mode={mode})"] = torchcodec_reader(mode)
    except Exception as e:  # noqa: BLE001 - not installed, or FFmpeg's shared libraries missing
        readers["torchcodec"] = f"not run: {_short_error(e)}"
    try:
        import decord

        readers[f"decord {decord.__version__}"] = lambda path, idx: torch.from_numpy(
            decord.VideoReader(path).get_batch([int(i) for i in idx]).asnumpy()
        )
    except Exception as e:  # noqa: BLE001
        readers["decord"] = f"not run: {_short_error(e)}"
    return readers


def _short_error(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160] if text else ''}".rstrip(": ")


def decoder_table(paths: list[str], clips: int, rounds: int) -> list[dict]:
    """Our sampler vs torchcodec vs decord on the same files and the same dense 8x16 frame indices."""
    import numpy as np

    from zeroi2v.data.decode import num_frames
    from zeroi2v.data.sampling import sample_indices

    lengths = {p: num_frames(p, "pyav") for p in paths}
    readers = decoder_readers()
    usable = {}
    rows = []
    reference = {}
    for name, reader in readers.items():  # first check each reader: frames equal to ours on one clip per file
        if isinstance(reader, str):
            rows.append({"decoder": name, "note": reader})
            continue
        try:
            diffs = []
            for p in paths:
                idx = sample_indices(lengths[p], 8, "dense", 16, train=True, rng=np.random.default_rng(7)).reshape(-1)
                frames = torch.as_tensor(reader(p, idx))
                if p not in reference:
                    reference[p] = frames
                if frames.shape != reference[p].shape:
                    raise RuntimeError(f"returned shape {tuple(frames.shape)}, ours {tuple(reference[p].shape)}")
                diffs.append((frames.float() - reference[p].float()).abs().mean().item())
            usable[name] = reader
            rows.append({"decoder": name, "mean_abs_diff_vs_ours": max(diffs)})
        except Exception as e:  # noqa: BLE001
            rows.append({"decoder": name, "note": f"failed: {_short_error(e)}"})

    def run_clips(reader, rng):
        for i in range(clips):
            p = paths[i % len(paths)]
            reader(p, sample_indices(lengths[p], 8, "dense", 16, train=True, rng=rng).reshape(-1))

    rngs = {name: np.random.default_rng(0) for name in usable}  # the same index sequence for every decoder
    times = interleaved_times({n: (lambda n=n: run_clips(usable[n], rngs[n])) for n in usable}, rounds, warmup=0)
    ours = next(iter(usable))
    for row in rows:
        if row["decoder"] in times:
            t = times[row["decoder"]]
            row.update(clips_per_s=clips / statistics.median(t), vs_ours=paired_ratio(times[ours], t))
    return rows


def loader_table(args, device, timm_kwargs) -> dict:
    """The training loader's clips/s for several worker counts, with the user's remedies, next to the
    model's training clips/s on this machine; then the decoders at equal output frames."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = sorted(set(args.loader_workers or {1, max(1, cores // 2), cores}))
    backbone = args.train_backbone or (args.backbone or DEFAULT_BACKBONES)[-1]
    frames, batch = 8, args.train_batch or max(2, args.batch)
    result = {
        "cores": cores,
        "img_size": timm_kwargs.get("img_size", 224),
        "videos": args.loader_videos,
        "seconds": args.loader_seconds,
        "short_side": args.loader_short_side,
        "clips": args.loader_clips,
        "rounds": args.loader_rounds,
        "backbone": backbone,
        "model": model_label(backbone, timm_kwargs),
        "train_batch": batch,
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        files = kinetics_like_videos(tmp, args.loader_videos, args.loader_seconds, args.loader_short_side)
        resized = 256 if args.loader_short_side > 256 else args.loader_short_side * 3 // 4  # the training short side
        small = kinetics_like_videos(tmp, args.loader_videos, args.loader_seconds, resized)
        from zeroi2v.data.decode import torchcodec_available

        configs = [(f"{w} worker{'s' if w != 1 else ''}", files, w, "pyav") for w in workers]
        top = max(workers)
        configs.append(
            (f"{top} worker{'s' if top != 1 else ''}, files pre-resized to short side {resized}", small, top, "pyav")
        )
        if torchcodec_available():
            configs.append(
                (f"{top} worker{'s' if top != 1 else ''}, data.backend: torchcodec", files, top, "torchcodec")
            )
        else:
            result["torchcodec_loader_note"] = "torchcodec cannot decode here (not installed or no FFmpeg libraries)"
        runs: dict[str, list[float]] = {name: [] for name, *_ in configs}
        pin = torch.device(device).type == "cuda"
        img = timm_kwargs.get("img_size", 224)
        for round_ in range(args.loader_rounds):
            for name, paths, w, backend in rotated(configs, round_):
                runs[name].append(
                    loader_clips_per_s(paths, w, args.loader_clips, backend=backend, img_size=img, pin_memory=pin)
                )
        for name, _paths, w, _backend in configs:
            result["rows"].append(
                {"loader": name, "workers": w, "clips_per_s": statistics.median(runs[name]), "runs": runs[name]}
            )
        result["decoders"] = decoder_table(files, args.loader_clips, args.loader_rounds)
    amp = "bf16" if args.dtype == "bf16" and torch.device(device).type == "cuda" else "none"
    spec = dict(
        method="zeroi2v",
        freeze=True,
        amp=amp,
        checkpointing=False,
        backbone=backbone,
        frames=frames,
        batch=batch,
        device=str(device),
        steps=args.train_steps,
        timm_kwargs=timm_kwargs,
    )
    model = run_child(spec)
    result["model_clips_per_s"] = batch / model["step_s"]
    result["model_amp"] = amp
    return result


def loader_verdict(result) -> str:
    best = max(
        result["rows"],
        key=lambda r: r["clips_per_s"] if "pre-resized" not in r["loader"] and "torchcodec" not in r["loader"] else -1,
    )
    model = result["model_clips_per_s"]
    if best["clips_per_s"] >= model:
        return (
            f"**The model bounds training here**: the loader delivers {best['clips_per_s']:.1f} clips/s with "
            f"{best['workers']} worker(s), {best['clips_per_s'] / model:.1f}× the {model:.2f} clips/s the model "
            "trains at; more loader speed would not make training faster."
        )
    need = math.ceil(best["workers"] * model / best["clips_per_s"])
    return (
        f"**The loader bounds training here**: {best['clips_per_s']:.1f} clips/s with {best['workers']} worker(s) vs "
        f"{model:.1f} clips/s the model could train at ({model / best['clips_per_s']:.1f}× more); at this rate per "
        f"worker it needs about {need} workers (cores), or cheaper clips (remedies below)."
    )


def loader_markdown(env, result) -> str:
    model_desc = f"{result['model']}, ZeroI2V frozen backbone, 8 frames, batch {result['train_batch']}, AdamW" + (
        ", bf16 autocast" if result["model_amp"] == "bf16" else ", fp32"
    )
    lines = [
        "## Loader vs model",
        "",
        "Generated by `zeroi2v bench --loader` (never edited by hand). Training clips/s of zeroi2v's loader "
        "(`VideoDataset` in train mode: dense 8×16 sampling, seek-and-stop decoding, RandAugment, random resized "
        f"crop to {result['img_size']}, flip, normalisation; `DataLoader` batches of 8, first batch not timed) on "
        f"{result['videos']} generated {result['seconds']:g} s 30 fps 16:9 H.264 files with a "
        f"{result['short_side']}-px short side (as Kinetics is distributed), next to the model's training "
        f"throughput on the same machine ({model_desc}). Medians of {result['rounds']} interleaved runs of "
        f"{result['clips']} clips. The loader and the model are measured one after the other (the loader needs "
        "the cores), so on a shared machine background load can favour either side.",
        "",
        *env_lines(env),
        f"- usable CPU cores: {result['cores']}",
        "",
        loader_verdict(result),
        "",
        "| loader | clips/s | vs model's training clips/s |",
        "|---|---:|---:|",
    ]
    model = result["model_clips_per_s"]
    lines += [f"| {r['loader']} | {r['clips_per_s']:.2f} | {r['clips_per_s'] / model:.2f}× |" for r in result["rows"]]
    lines += [f"| model training step ({model_desc}) | {model:.2f} | 1.00× |", ""]
    if result.get("torchcodec_loader_note"):
        lines += [f"torchcodec as the loader's backend: {result['torchcodec_loader_note']}.", ""]
    resized = next((r["loader"].rsplit(" ", 1)[-1] for r in result["rows"] if "pre-resized" in r["loader"]), "256")
    lines += [
        "Remedies where the loader bounds training, each measured above against the same files: more "
        "`train.num_workers` (one per free core; the rows' worker counts), files pre-resized to the training "
        "short side (`ffmpeg -i in.mp4 -vf scale=-2:256 out.mp4` once for the dataset; decoding cost scales "
        f"with pixels; here the same scene written at {resized} px), and `data.backend: torchcodec` where torchcodec "
        "and FFmpeg's libraries are installed (`pip install zeroi2v[torchcodec]`).",
        "",
        "### Decoders at equal output frames",
        "",
        "The same dense 8×16 frame indices from the same files, as a dataset calls a decoder: a fresh decoder "
        "per clip, the frame count known (ours caches it per file, as `VideoDataset` does), each library's "
        "default threading, single process. Mean abs diff: the largest over the files of the mean absolute "
        "pixel difference to our frames (0-255; colour conversion differs slightly between libraries, a "
        "wrong frame differs by far more).",
        "",
        "| decoder | clips/s | speed vs ours (paired) | mean abs diff vs ours | |",
        "|---|---:|---:|---:|---|",
    ]
    for r in result["decoders"]:
        if "clips_per_s" in r:
            lines.append(
                f"| {r['decoder']} | {r['clips_per_s']:.2f} | {r['vs_ours']:.2f}× | "
                f"{r['mean_abs_diff_vs_ours']:.2f} | |"
            )
        else:
            lines.append(f"| {r['decoder']} | | | | {r['note']} |")
    lines.append("")
    return "\n".join(lines) + "\n"


def add_loader_args(parser) -> None:
    """The options of `zeroi2v bench --loader`."""
    parser.add_argument(
        "--loader-workers",
        nargs="+",
        type=int,
        default=None,
        help="DataLoader worker counts (default: 1, half the cores, all cores)",
    )
    parser.add_argument("--loader-videos", type=int, default=4)
    parser.add_argument("--loader-seconds", type=float, default=10)
    parser.add_argument("--loader-short-side", type=int, default=340)
    parser.add_argument("--loader-clips", type=int, default=32, help="clips per timed loader run")
    parser.add_argument("--loader-rounds", type=int, default=3)
