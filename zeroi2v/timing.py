"""The one timing harness of zeroi2v's benchmarks (`zeroi2v bench`, the demo, the studies in benchmarks/):
interleaved rounds, every variant once per round with the order rotated, so load drifts hit all alike;
peak memory from the allocator (CUDA) or the profiler's allocation record (CPU)."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch


def rotated(names: list, round_: int) -> list:
    """The run order of one interleaved round, shifted by one each round (no position bias)."""
    k = round_ % len(names)
    return names[k:] + names[:k]


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved_times(
    runs: dict[str, Callable[[], object]],
    rounds: int,
    device="cpu",
    warmup: int = 1,
    setup: dict[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each function: `warmup` untimed calls each, then `rounds` rounds in which
    every function runs once (order rotated per round), so load drifts hit all alike. `setup[name]`,
    if given, runs untimed before each call of `name`. The one timing loop of the benchmarks (tables,
    training steps, decoders)."""
    setup = setup or {}
    for _ in range(warmup):
        for name, f in runs.items():
            setup.get(name, lambda: None)()
            f()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for round_ in range(rounds):
        for name in rotated(list(runs), round_):
            setup.get(name, lambda: None)()
            sync(device)
            start = time.perf_counter()
            runs[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator/denominator taken in the same round (load drifts cancel)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=False))


def cuda_peak_mb(fn: Callable[[], object], resident_bytes: int = 0) -> float:
    """`resident_bytes` + the peak that one call of `fn` allocates above what was live before (MiB)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before + resident_bytes) / 2**20


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def cpu_peak_bytes(step) -> int:
    """Peak of live tensor bytes allocated by `step()` above what was live before (CPU allocator).

    The CPU counterpart of `torch.cuda.max_memory_allocated`: the profiler records every allocation and
    free of PyTorch's CPU allocator (`profile_memory=True`); in the exported trace they are the
    `[memory]` events, whose running sum peaks where activations + gradients peak.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    memory = sorted(
        (e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"]
    )  # stable: ties keep order
    live = peak = 0
    for e in memory:
        live += e["args"]["Bytes"]
        peak = max(peak, live)
    return peak


def relative_speeds(models: dict, clip: torch.Tensor, rounds: int = 7, repeats: int = 5, device="cpu") -> dict:
    """Clips/s of each model and its speed relative to the first, from `interleaved_times` in `rounds`
    groups of `repeats` calls: each group gives each model a median time and a ratio to the first model.
    Returns {name: {"clips_per_s", "ratio" (median over groups), "ratio_min", "ratio_max", "rounds"}}: the
    spread is how far one group's ratio strayed."""
    for m in models.values():
        m.eval()
    with torch.no_grad():
        times = interleaved_times({n: (lambda m=m: m(clip)) for n, m in models.items()}, rounds * repeats, device)
    speeds = {
        n: [clip.shape[0] / statistics.median(t[r * repeats : (r + 1) * repeats]) for r in range(rounds)]
        for n, t in times.items()
    }
    first = speeds[next(iter(models))]
    out = {}
    for n, s in speeds.items():
        ratios = [a / b for a, b in zip(s, first, strict=True)]
        out[n] = {
            "clips_per_s": statistics.median(s),
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "rounds": rounds,
        }
    return out
