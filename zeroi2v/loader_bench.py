"""`zeroi2v bench --loader`: will the GPU wait for the training loader?

CPU time per training clip (`time.process_time`, one thread) of the K400 ViT-B/16 recipe's training
pipeline, split into decoding (`VideoDataset.read`), augmentation (the rest of the batch fetch
`__getitems__`, as the DataLoader calls it: sampling, `TrainTransform` into the batch or, with
`data.gpu_augment`, its loader part `start`) and `collate`, for the source
videos and their `zeroi2v prepare` copies (short-GOP video, JPEG frames), with and without
`gpu_augment` and `repeat_clips`. Every row goes through the dataset `create_dataset` builds from the
shipped recipe, on the same clips (same seeds), in interleaved rounds with the order rotated. From
the ms per clip: clips/s per core, and the cores per GPU a model rate needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from zeroi2v.bench_report import env_lines
from zeroi2v.timing import interleaved_times, paired_ratio, rotated

RECIPE = Path(__file__).parent / "configs" / "k400_vitb16_8x16x1.yaml"
MODEL_RATES = (133.0, 306.0)  # one H100, ZeroI2V ViT-B/16, 8 frames: bf16 eager, compiled (docs/benchmarks.md)
CORES_PER_GPU = 14
SOURCES = ("source video", "prepared video", "prepared frames")
TODAY = "source video"  # today's path: the source files, CPU augmentation, one clip per read
BATCH = 8  # items per collated batch
PARTS = ("decode", "augment", "collate")
# targets: (name, row, baseline, at least this many times less CPU per clip)
TARGETS = (
    ("prepared frames vs source video", ("prepared frames", False, 1), (TODAY, False, 1), 5.0),
    ("prepared video vs source video", ("prepared video", False, 1), (TODAY, False, 1), 2.0),
    ("prepared frames + gpu_augment vs today's path", ("prepared frames", True, 1), (TODAY, False, 1), 10.0),
)
FRAMES_MAX_MS = 50.0
# test videos' fine detail and per-frame noise, so that bitrate and decoding cost per pixel are in the range of
# real camera footage (the flat scene alone decoded cheaper and at half the bitrate)
TEXTURE, GRAIN = 0.25, 2.0  # prepared frames: at most this CPU time per clip


def write_test_video(
    path, seconds: float, fps: int, width: int, height: int, gop: int | None = None, seed: int = 0
) -> str:
    """A random textured scene panning 3 px/frame with a bouncing square and sensor-like noise, H.264
    (crf 23): content x264 has to encode, like real footage. `gop` None: x264's default keyframe interval (250)."""
    from fractions import Fraction

    import av
    import numpy as np

    frames, pan = int(seconds * fps), 3
    gen = torch.Generator().manual_seed(seed)
    size = (height, width + pan * frames)
    scene = torch.zeros(1, 3, *size)
    for step, weight in ((16, 1.0), (4, TEXTURE), (1, TEXTURE / 2)):  # coarse shapes, then texture
        octave = torch.rand(1, 3, max(1, size[0] // step), max(1, size[1] // step), generator=gen) - 0.5
        scene += weight * torch.nn.functional.interpolate(octave, size=size, mode="bicubic")
    scene = ((scene[0].permute(1, 2, 0) + 0.5).clamp(0, 1) * 255).to(torch.uint8).numpy()
    grain = np.random.default_rng(seed)
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
            noise = grain.normal(0, GRAIN, (height // 2, width // 2, 1)).repeat(2, 0).repeat(2, 1)  # sensor noise
            frame = np.clip(frame + noise, 0, 255).astype(np.uint8)
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


LOADER_DEFAULTS = {"videos": 4, "seconds": 10.0, "short_side": 340, "clips": 32, "rounds": 5, "img_size": None}
LOADER_TINY = {"videos": 1, "seconds": 1.0, "short_side": 48, "clips": 2, "rounds": 1, "img_size": 32}


def loader_settings(args) -> dict:
    """The --loader-* values given, else the defaults (with --tiny: a seconds-long smoke run)."""
    defaults = LOADER_TINY if args.tiny else LOADER_DEFAULTS
    given = {k: getattr(args, f"loader_{k}") for k in defaults if k != "img_size"} | {"img_size": args.img_size}
    return {k: defaults[k] if given[k] is None else given[k] for k in defaults}


def row_label(key: tuple) -> str:
    source, on_device, repeat = key
    return source + (", gpu_augment" if on_device else "") + (f", repeat_clips {repeat}" if repeat > 1 else "")


def prepared_copies(folder: Path, paths: list[str]) -> tuple[dict[str, Path], dict[str, int]]:
    """({data: folder holding train.txt}, {data: bytes on disk}): the source videos (in `folder`/source)
    and their `zeroi2v prepare` copies with its defaults (short side 256; GOP-8 video, JPEG q90 frames)."""
    from zeroi2v.prepare import prepare

    source = Path(paths[0]).parent
    (source / "train.txt").write_text("".join(f"{Path(p).name} 0\n" for p in paths))
    roots = {SOURCES[0]: source}
    disk = {SOURCES[0]: sum(os.path.getsize(p) for p in paths)}
    for name, fmt in zip(SOURCES[1:], ("video", "frames"), strict=True):
        report = prepare(source / "train.txt", folder / fmt, fmt=fmt, progress=False, log=lambda *_: None)
        roots[name], disk[name] = folder / fmt, report["prepared_bytes"]
    return roots, disk


def recipe_datasets(roots: dict[str, Path], img_size: int | None) -> dict[tuple, object]:
    """{(data, gpu_augment, repeat_clips): the training dataset `zeroi2v train` builds from the K400
    ViT-B/16 recipe with data.root and data.train_list pointing at that data}."""
    from zeroi2v.config import load_config
    from zeroi2v.data import create_dataset

    datasets = {}
    for source, on_device, repeat in itertools.product(SOURCES, (False, True), (1, 2)):
        root = roots[source]
        overrides = [
            f"data.root={root}",
            f"data.train_list={root / 'train.txt'}",
            "data.val_list=null",
            f"data.gpu_augment={str(on_device).lower()}",
            f"data.repeat_clips={repeat}",
        ] + ([f"data.img_size={img_size}"] if img_size else [])
        datasets[(source, on_device, repeat)] = create_dataset(load_config(RECIPE, overrides), "train")
    return datasets


class ReadClock:
    """Stands in for a dataset's `read` (its decoding), calling it and adding up the CPU time it takes."""

    def __init__(self, dataset):
        self.seconds, self.read = 0.0, dataset.read
        dataset.read = self

    def __call__(self, *args):
        start = time.process_time()
        try:
            return self.read(*args)
        finally:
            self.seconds += time.process_time() - start


@contextlib.contextmanager
def one_thread():
    """torch on one thread (CPU cost per core), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def clip_count(items: list[dict]) -> int:
    return sum(len(item["label"]) if isinstance(item["label"], list) else 1 for item in items)


def measure_round(dataset, clock: ReadClock, items: list[int], device) -> dict:
    """Per clip of `items`, in CPU ms: decode (in `read`), augment (the rest of `__getitems__`), collate
    (batches of BATCH items); with gpu_augment also "device", the batches' `finish`."""
    from zeroi2v.data import collate

    clock.seconds = 0.0
    start = time.process_time()
    fetched = [dataset.__getitems__(items[i : i + BATCH]) for i in range(0, len(items), BATCH)]  # as the DataLoader
    load = time.process_time() - start
    start = time.process_time()
    batches = [collate(got) for got in fetched]
    got = [item for batch in fetched for item in batch]
    seconds = {"decode": clock.seconds, "augment": load - clock.seconds, "collate": time.process_time() - start}
    if dataset.on_device:
        seconds["device"] = device_seconds(batches, dataset, device)
    clips = clip_count(got)
    return {k: 1000 * v / clips for k, v in seconds.items()} | {"clips": clips}


def device_seconds(batches: list[dict], dataset, device) -> float:
    """Time of the device part of gpu_augment (`augment_on_device`) for the batches: CPU time on a CPU,
    wall time (synchronised) on a GPU."""
    from zeroi2v.data import augment_on_device

    cuda = torch.device(device).type == "cuda"
    clock = time.perf_counter if cuda else time.process_time
    if cuda:
        torch.cuda.synchronize()
    start = clock()
    for batch in batches:
        augment_on_device(batch, device, dataset)
    if cuda:
        torch.cuda.synchronize()
    return clock() - start


def measure_rows(datasets: dict, clips: int, rounds: int, device) -> dict[tuple, list[dict]]:
    """`rounds` interleaved rounds (order rotated): each row makes `clips` clips from the same items
    with the same seeds (epoch = round). One untimed pass first (frame counts cached, code warm)."""
    from tqdm import tqdm

    from zeroi2v.data.dataset import keep_freed_memory

    keep_freed_memory()  # as in `zeroi2v train`'s loader workers
    clocks = {key: ReadClock(d) for key, d in datasets.items()}
    runs: dict[tuple, list[dict]] = {key: [] for key in datasets}
    with one_thread():
        for dataset in datasets.values():
            dataset.set_epoch(rounds)
            for i in range(len(dataset)):
                dataset[i]
        for round_ in tqdm(range(rounds), desc="loader rounds", disable=os.environ.get("CI") == "true"):
            for key in rotated(list(datasets), round_):
                dataset = datasets[key]
                dataset.set_epoch(round_)
                items = [i % len(dataset) for i in range(-(-clips // key[2]))]
                runs[key].append(measure_round(dataset, clocks[key], items, device))
    return runs


@contextlib.contextmanager
def counting_decodes():
    """{"frames": n}: frames the decoders decode meanwhile (PyAV frames out of the codec, image files)."""
    from zeroi2v.data import decode, frames

    count = {"frames": 0}
    add, decode_frame = decode._Collector.add, frames.decode_frame

    def counted_add(self, frame):
        count["frames"] += 1
        return add(self, frame)

    def counted_frame(path):
        count["frames"] += 1
        return decode_frame(path)

    decode._Collector.add, frames.decode_frame = counted_add, counted_frame
    try:
        yield count
    finally:
        decode._Collector.add, frames.decode_frame = add, decode_frame


def decoded_frames(datasets: dict, rounds: int) -> dict[str, float | None]:
    """{data: frames decoded per clip} over one clip of each video (None where the decoder is not
    PyAV's and cannot be counted)."""
    from zeroi2v.data.decode import torchcodec_available

    out = {}
    for source in SOURCES:
        dataset = datasets[(source, False, 1)]
        if source != "prepared frames" and dataset.backend != "pyav" and torchcodec_available():
            out[source] = None
            continue
        dataset.set_epoch(rounds + 1)
        with counting_decodes() as count:
            for i in range(len(dataset)):
                dataset.load(i, dataset.rng(i))
        out[source] = count["frames"] / len(dataset)
    return out


def augment_steps(datasets: dict, clips: int, rounds: int) -> dict[str, dict[str, float]]:
    """{data: {step: CPU ms per clip}}: where the CPU augmentation's time goes, step by step (the chain of
    `TrainTransform.run` with each clip's plan, then `normalize`), on the source video and prepared frames."""
    import numpy as np

    from zeroi2v.data.sampling import sample_indices

    out = {}
    with one_thread():
        for source in (SOURCES[0], SOURCES[2]):
            dataset = datasets[(source, False, 1)]
            transform, steps = dataset.transform, step_groups(dataset.transform.steps)
            times = {name: [] for name, _, _ in steps}
            for round_ in range(rounds):
                spent = dict.fromkeys(times, 0.0)
                for i in range(clips):
                    index = i % len(dataset)
                    rng = np.random.default_rng([round_, i])
                    picks = sample_indices(dataset.count(dataset.path(index)), dataset.num_frames, dataset.sampling,
                                           dataset.frame_interval, 1, True, rng).reshape(-1)  # fmt: skip
                    video = dataset.read(dataset.path(index), picks).permute(0, 3, 1, 2)
                    torch.manual_seed(round_ * clips + i)
                    plan = transform.plan(*video.shape[:1], *video.shape[-2:])
                    for name, first, stop in steps:
                        start = time.process_time()
                        video = (
                            transform.normalize(video)
                            if name == "normalize"
                            else transform.run(video, plan, first, stop)
                        )
                        spent[name] += time.process_time() - start
                for name, seconds in spent.items():
                    times[name].append(1000 * seconds / clips)
            out[source] = {name: statistics.median(t) for name, t in times.items()}
    return out


def step_groups(steps: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """(name, start, stop) of the chain's steps as `run` computes them: RandAugment right before the crop
    computes only the crop's box, so the two are timed together."""
    groups, k = [], 0
    while k < len(steps):
        joined = steps[k : k + 2] == ("rand_augment", "random_resized_crop")
        groups.append((" + ".join(steps[k : k + 1 + joined]), k, k + 1 + joined))
        k += 1 + joined
    return groups


def summarise(runs: dict[tuple, list[dict]], rates: list[float], cores_per_gpu: int) -> list[dict]:
    """One row per configuration: median ms per clip of each part, their sum, clips/s per core, the CPU
    cost relative to today's path (paired per round), the cores per GPU at each model rate and the share
    of time a GPU at each rate waits on a server with `cores_per_gpu` cores per GPU."""
    base = [sum(r[p] for p in PARTS) for r in runs[(TODAY, False, 1)]]
    rows = []
    for key, rounds in runs.items():
        parts = {p: statistics.median(r[p] for r in rounds) for p in PARTS}
        total = sum(parts.values())
        fed = cores_per_gpu * 1000 / total
        row = {
            "data": key[0],
            "gpu_augment": key[1],
            "repeat_clips": key[2],
            "label": row_label(key),
            **{f"{p}_ms": v for p, v in parts.items()},
            "cpu_ms": total,
            "clips_per_s_per_core": 1000 / total,
            "less_cpu_than_today": paired_ratio(base, [sum(r[p] for p in PARTS) for r in rounds]),
            "per_model_rate": [
                {"model_rate": rate, "cores_per_gpu": rate * total / 1000, "gpu_waits": max(0.0, 1 - fed / rate)}
                for rate in rates
            ],
            "server_clips_per_s": fed,
            "clips_per_round": rounds[0]["clips"],
            "rounds": rounds,
        }
        if key[1]:
            row["device_ms"] = statistics.median(r["device"] for r in rounds)
        rows.append(row)
    return rows


def targets(runs: dict[tuple, list[dict]], rows: list[dict]) -> list[dict]:
    """The loader targets, each with its paired ratio (or ms per clip) and whether it is met."""
    total = {key: [sum(r[p] for p in PARTS) for r in rounds] for key, rounds in runs.items()}
    out = []
    for name, row, baseline, at_least in TARGETS:
        ratio = paired_ratio(total[baseline], total[row])
        out.append({"target": f"{name}: ≥ {at_least:g}× less CPU per clip", "measured": f"{ratio:.1f}×",
                    "ok": ratio >= at_least})  # fmt: skip
    frames = next(r for r in rows if (r["data"], r["gpu_augment"], r["repeat_clips"]) == ("prepared frames", False, 1))
    out.append({"target": f"prepared frames: ≤ {FRAMES_MAX_MS:g} ms CPU per clip",
                "measured": f"{frames['cpu_ms']:.1f} ms", "ok": frames["cpu_ms"] <= FRAMES_MAX_MS})  # fmt: skip
    return out


def loader_table(args, device) -> dict:
    """Generate the videos and their prepared copies, measure every row, and summarise (see the module)."""
    from zeroi2v.data.decode import torchcodec_available

    settings = loader_settings(args)
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    rates = list(args.model_rate or MODEL_RATES)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "source"
        folder.mkdir()
        paths = kinetics_like_videos(folder, settings["videos"], settings["seconds"], settings["short_side"])
        roots, disk = prepared_copies(Path(tmp), paths)
        datasets = recipe_datasets(roots, settings["img_size"])
        runs = measure_rows(datasets, settings["clips"], settings["rounds"], device)
        decoded = decoded_frames(datasets, settings["rounds"])
        steps = augment_steps(datasets, settings["clips"], settings["rounds"])
        decoders = decoder_table(paths, settings["clips"], settings["rounds"])
    rows = summarise(runs, rates, args.cores_per_gpu)
    some = datasets[(TODAY, False, 1)]
    on_device = datasets[(TODAY, True, 1)].transform
    return {
        **settings,
        "width": int(round(settings["short_side"] * 16 / 9 / 2)) * 2,
        "recipe": RECIPE.name,
        "clip": {k: v for k, v in dataclasses.asdict(some.clip).items() if k not in ("mean", "std")},
        "augment": dataclasses.asdict(some.augment),
        "steps": list(some.transform.steps),
        "loader_steps": list(on_device.steps[: on_device.loader_steps]),
        "decoder": "torchcodec" if some.backend != "pyav" and torchcodec_available() else "PyAV",
        "model_rates": rates,
        "cores_per_gpu": args.cores_per_gpu,
        "device_part_on": str(device),
        "disk_bytes_per_video": {k: v / len(paths) for k, v in disk.items()},
        "decoded_frames_per_clip": decoded,
        "augment_steps_ms": steps,
        "rows": rows,
        "targets": targets(runs, rows),
        "decoders": decoders,
        "load_average_start": load_start,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


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


def loader_markdown(env, result) -> str:
    """The section: settings, verdict, the split table, the targets, the device part, the decode check,
    the decoders."""
    clip, augment = result["clip"], result["augment"]
    rates = result["model_rates"]
    lines = [
        "## Loader: will the GPU wait?",
        "",
        "Generated by `zeroi2v bench --loader` (never edited by hand). CPU time per training clip "
        "(`time.process_time`, one thread) of the training dataset that `zeroi2v train` builds from the shipped "
        f"recipe `{result['recipe']}` (dense {clip['num_frames']}×{clip['frame_interval']} sampling, "
        f"{' → '.join(result['steps'])} at {clip['img_size']}; RandAugment {augment['rand_augment_layers']} ops "
        f"at magnitude {augment['rand_augment_magnitude']:g}), on {result['videos']} generated Kinetics-like "
        f"videos ({result['seconds']:g} s, {result['width']}×{result['short_side']}, 30 fps, H.264 with x264's "
        "default keyframe interval) and on their `zeroi2v prepare` copies with its defaults (`--format video`: "
        "short side 256, a keyframe every 8 frames; `--format frames`: JPEG quality 90 at short side 256). "
        f"Decoder: {result['decoder']}. Decode = `VideoDataset.read`; augment = the rest of the batch fetch "
        "`__getitems__` as the DataLoader calls it (sampling, seeding, the transform, normalised straight into the "
        "batch tensor; with `data.gpu_augment` only the loader's part, "
        f"{' → '.join(result['loader_steps']) or 'nothing'}); collate = `collate` on batches of {BATCH} "
        f"items. Medians of {result['rounds']} interleaved rounds of {result['clips']} clips per row (order "
        "rotated each round, the same clips and seeds in every row); CPU ms per clip is the sum of the three "
        "medians, ratios are medians of per-round ratios. `repeat_clips 2`: one read gives two clips, costs "
        "are per clip. The measuring process keeps freed memory for reuse as the training loader's workers do "
        "(`keep_freed_memory`: glibc's malloc thresholds; without it each clip's buffers are fresh pages, "
        "about 3 ms more per prepared-frames clip).",
        "",
        *env_lines(env),
        _load_line(result),
        "",
        _verdict(result),
        "",
        *_rows_table(result),
        "",
        f"Cores per GPU = model rate × CPU ms per clip / 1000 for a model training at {_rates(rates)} clips/s "
        f"({_rates_source(rates)}`--model-rate`). The last columns assume "
        f"{result['cores_per_gpu']} cores per GPU (`--cores-per-gpu`), every core a loader worker, at each "
        "rate. Loader CPU only: with `gpu_augment` the GPU also does the augmentation (below). The generated "
        "videos (a textured scene panning 3 px per frame, a bouncing square, sensor-like noise) decode at about "
        "the cost of real footage encoded the same way (checked once: a 10 s camera clip re-encoded at 604×340, "
        "crf 23, took 0.49 ms of CPU per decoded frame and 0.57 MB, a generated one 0.41 ms and 0.55 MB); "
        "busier footage costs more, so the source rows are not on the expensive side.",
        "",
        "### Targets",
        "",
        *[f"- {'✓' if t['ok'] else '✗'} {t['target']}: **{t['measured']}**" for t in result["targets"]],
        "",
        *_step_lines(result),
        *_device_lines(result),
        *_decode_lines(result),
        *_decoder_lines(result["decoders"]),
    ]
    return "\n".join(lines) + "\n"


def _rates(rates: list[float]) -> str:
    return " or ".join(f"{r:g}" for r in rates)


def _rates_source(rates: list[float]) -> str:
    if tuple(rates) != MODEL_RATES:
        return ""
    return (
        "the default: one H100 training ZeroI2V ViT-B/16, 8 frames, batch 16, bf16 autocast, eager and compiled, "
        "from the GPU check's training step and torch.compile tables; "
    )


def _load_line(result) -> str:
    load = result.get("load_average")
    if not load:
        return "- load average: not available on this platform"
    start = result.get("load_average_start") or load
    return (
        f"- load average (1, 5, 15 min): {', '.join(f'{v:.2f}' for v in start)} at the start of the loader "
        f"measurement, {', '.join(f'{v:.2f}' for v in load)} at its end (process time is CPU time, but "
        "contention for caches and memory still slows a busy machine)"
    )


def _verdict(result) -> str:
    rows, rates, cores = result["rows"], result["model_rates"], result["cores_per_gpu"]
    today = next(r for r in rows if r["label"] == TODAY)
    best = min(rows, key=lambda r: r["cpu_ms"])

    def says(row) -> str:
        per = row["per_model_rate"]
        need = " / ".join(f"{p['cores_per_gpu']:.1f}" for p in per)
        waits = " / ".join(f"{100 * p['gpu_waits']:.0f}%" for p in per)
        return (
            f"{row['cpu_ms']:.1f} ms of CPU per clip ({row['clips_per_s_per_core']:.1f} clips/s per core): a GPU "
            f"training at {' / '.join(f'{r:g}' for r in rates)} clips/s needs {need} cores; a server with {cores} "
            f"cores per GPU feeds {row['server_clips_per_s']:.0f} clips/s, so the GPU waits {waits} of the time"
        )

    cheapest = f"**Cheapest** ({best['label']}): {says(best)}."
    return f"**Today's path** (source video, CPU augmentation): {says(today)}. {cheapest}"


def _rows_table(result) -> list[str]:
    rates, cores = result["model_rates"], result["cores_per_gpu"]
    head = (
        "| data | decode ms | augment ms | collate ms | **CPU ms per clip** | clips/s per core | less CPU than "
        f"today (paired) | {' | '.join(f'cores per GPU at {r:g} clips/s' for r in rates)} | {cores} cores per "
        f"GPU feed (clips/s) | {' | '.join(f'GPU waits at {r:g} clips/s' for r in rates)} |"
    )
    lines = [head, "|---|" + "---:|" * (7 + 2 * len(rates))]
    for r in result["rows"]:
        need = " | ".join(f"{p['cores_per_gpu']:.1f}" for p in r["per_model_rate"])
        waits = " | ".join(f"{100 * p['gpu_waits']:.0f}%" for p in r["per_model_rate"])
        lines.append(
            f"| {r['label']} | {r['decode_ms']:.1f} | {r['augment_ms']:.1f} | {r['collate_ms']:.2f} | "
            f"**{r['cpu_ms']:.1f}** | {r['clips_per_s_per_core']:.1f} | {r['less_cpu_than_today']:.1f}× | {need} | "
            f"{r['server_clips_per_s']:.0f} | {waits} |"
        )
    return lines


def _step_lines(result) -> list[str]:
    steps = result.get("augment_steps_ms") or {}
    if not steps:
        return []
    names = list(next(iter(steps.values())))
    lines = [
        "### Where the CPU augmentation goes",
        "",
        "CPU ms per clip of each step of the recipe's augmentation (`TrainTransform.run` step by step with the "
        "clip's plan, one thread; RandAugment right before the crop computes only the pixels the crop keeps, so "
        "the two are one column; clips drawn like those above but not the same ones, so the sum differs from "
        "the augment column by the clips' luck of RandAugment ops; medians of the rounds): once decoding is "
        "cheap, this is most of the clip's cost.",
        "",
        f"| data | {' | '.join(names)} | sum |",
        "|---|" + "---:|" * (len(names) + 1),
    ]
    for source, ms in steps.items():
        lines.append(f"| {source} | {' | '.join(f'{ms[n]:.1f}' for n in names)} | {sum(ms.values()):.1f} |")
    return [*lines, ""]


def _device_lines(result) -> list[str]:
    where = result["device_part_on"]
    how = "CPU time, one thread, of this machine's CPU" if where == "cpu" else f"wall time on {where}"
    lines = [
        "### gpu_augment: the device's part",
        "",
        "For information: what `gpu_augment` moves off the loader (`augment_on_device` on the collated batch: "
        f"RandAugment, crop, flip, erasing, normalisation), per clip, {how}. Not loader CPU; on a GPU it "
        "runs batched beside the model.",
        "",
        "| data | device-side augment ms per clip |",
        "|---|---:|",
    ]
    lines += [f"| {r['label']} | {r['device_ms']:.1f} |" for r in result["rows"] if "device_ms" in r]
    return [*lines, ""]


def _decode_lines(result) -> list[str]:
    lines = [
        "### Decoding only what is needed",
        "",
        f"Frames decoded per clip of {result['clip']['num_frames']} sampled frames (one clip per video, counted at "
        "the decoder: frames out of PyAV's codec, JPEG files decoded), and the disk each form takes.",
        "",
        "| data | frames decoded per clip | disk per video |",
        "|---|---:|---:|",
    ]
    for source in SOURCES:
        n = result["decoded_frames_per_clip"].get(source)
        size = result["disk_bytes_per_video"][source] / 2**20
        lines.append(f"| {source} | {'not counted (torchcodec)' if n is None else f'{n:.1f}'} | {size:.2f} MB |")
    return [*lines, ""]


def _decoder_lines(decoders: list[dict]) -> list[str]:
    lines = [
        "### Decoders at equal output frames",
        "",
        "The same dense 8×16 frame indices from the source files, as a dataset calls a decoder: a fresh "
        "decoder per clip, the frame count known, each library's default threading, single process, wall time. "
        "Mean abs diff: the largest over the files of the mean absolute pixel difference to our frames (0-255).",
        "",
        "| decoder | clips/s | speed vs ours (paired) | mean abs diff vs ours | |",
        "|---|---:|---:|---:|---|",
    ]
    for r in decoders:
        if "clips_per_s" in r:
            lines.append(
                f"| {r['decoder']} | {r['clips_per_s']:.2f} | {r['vs_ours']:.2f}× | "
                f"{r['mean_abs_diff_vs_ours']:.2f} | |"
            )
        else:
            lines.append(f"| {r['decoder']} | | | | {r['note']} |")
    return [*lines, ""]


def add_loader_args(parser) -> None:
    """The options of `zeroi2v bench --loader` (unset: the defaults; with --tiny, a smoke run's)."""
    add = parser.add_argument

    def default(key) -> str:
        return f"default {LOADER_DEFAULTS[key]:g}; --tiny: {LOADER_TINY[key]:g}"

    add("--loader-videos", type=int, default=None, help=f"generated Kinetics-like videos ({default('videos')})")
    add("--loader-seconds", type=float, default=None, help=f"their length in seconds ({default('seconds')})")
    add("--loader-short-side", type=int, default=None, help=f"their short side, 16:9 ({default('short_side')})")
    add("--loader-clips", type=int, default=None, help=f"clips per row and round ({default('clips')})")
    add("--loader-rounds", type=int, default=None, help=f"interleaved rounds, median ({default('rounds')})")
    add(
        "--model-rate",
        nargs="+",
        type=float,
        default=None,
        help="clips/s a GPU trains at, for the cores per GPU and the GPU's wait (default: "
        f"{' '.join(f'{r:g}' for r in MODEL_RATES)}: one H100 with ZeroI2V ViT-B/16 8 frames in bf16, eager "
        "and compiled)",
    )
    add(
        "--cores-per-gpu",
        type=int,
        default=CORES_PER_GPU,
        help=f"CPU cores per GPU of the server in the verdict (default {CORES_PER_GPU})",
    )
