"""Training, readable top to bottom: `zeroi2v train CONFIG.yaml [--set k=v ...]`.

One process or many (torchrun: DDP, gloo on CPU, NCCL on GPU). The run directory is also a model
directory. Everything needed to continue is checkpointed atomically, so running the same command on
an unfinished run resumes it exactly (same final weights as a run that never stopped): model,
optimizer, scaler, RNG state, epoch and position inside the epoch. The data order of an epoch is a
function of (seed, epoch) and each sample's augmentation of (seed, epoch, index), so nothing about
the data needs saving. SIGTERM/SIGINT (preemption) checkpoint at the next step and exit.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import signal
import socket
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from zeroi2v.config import DEFAULTS, dump_config, flatten, model_kwargs
from zeroi2v.errors import UserError
from zeroi2v.fileio import atomic_save_safetensors, atomic_write, atomic_write_json, atomic_write_text
from zeroi2v.model import create_model, param_groups, save_pretrained

CKPT_DIR = "checkpoint"
RESUME_MAY_CHANGE = {"output", "train.num_workers"}  # keys that do not change the result of a run


# --- distributed ------------------------------------------------------------------------------------
def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun: init the process group (NCCL on GPU, gloo on CPU)."""
    if "RANK" not in os.environ or dist.is_initialized():
        rank = dist.get_rank() if dist.is_initialized() else 0
        world = dist.get_world_size() if dist.is_initialized() else 1
        return rank, world, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        device = torch.device("cuda", local)
    else:
        dist.init_process_group("gloo")
        device = torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def interactive() -> bool:
    """Progress bars only for a person watching a terminal (not in logs, CI or pipes)."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def all_sum(values: list[float], device) -> list[float]:
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


class EpochSampler(torch.utils.data.Sampler):
    """This rank's indices of one epoch: a (seed, epoch) permutation, split across ranks without
    padding, starting at a given position (for mid-epoch resume)."""

    def __init__(self, n: int, rank: int, world: int, seed: int, epoch: int, shuffle: bool, batch: int, start: int = 0):
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        per_rank = (n // world) // batch * batch if shuffle else math.ceil(n / world)  # train: whole batches only
        self.indices = order[rank::world][:per_rank].tolist()[start:]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# --- run directory: lock, checkpoint, metrics -------------------------------------------------------
class RunLock:
    """`output/.lock` holds host:pid; a second live run on the same directory is refused."""

    def __init__(self, directory: Path):
        self.path = directory / ".lock"
        self.held = False

    def __enter__(self):
        me = f"{socket.gethostname()}:{os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, me.encode())
                os.close(fd)
                self.held = True
                return self
            except FileExistsError:
                owner = self.path.read_text().strip() if self.path.exists() else ""
                host, _, pid = owner.partition(":")
                if host == socket.gethostname() and pid.isdigit() and _alive(int(pid)):
                    raise UserError(f"{self.path.parent} is in use by another run (pid {pid}); "
                                    "wait for it or choose another output") from None
                self.path.unlink(missing_ok=True)  # stale lock of a dead run
        raise UserError(f"cannot lock {self.path}")

    def __exit__(self, *exc):
        if self.held:
            self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def save_checkpoint(out: Path, model, optimizer, scaler, state: dict) -> None:
    """Weights (safetensors) + resume state (tensors and plain containers only), then an atomic
    pointer `last.json` naming both; older files are removed after the pointer moved."""
    ckpt = out / CKPT_DIR
    ckpt.mkdir(parents=True, exist_ok=True)
    tag = f"e{state['epoch']:04d}-s{state['step']:06d}"
    atomic_save_safetensors(ckpt / f"model-{tag}.safetensors", model.state_dict())
    resume = {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
              "torch_rng": torch.get_rng_state(),
              "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
              **{k: v for k, v in state.items() if k != "history"}, "history": json.dumps(state["history"])}
    atomic_write(ckpt / f"state-{tag}.pt", lambda tmp: torch.save(resume, tmp))
    atomic_write_json(ckpt / "last.json", {"model": f"model-{tag}.safetensors", "state": f"state-{tag}.pt"})
    for old in ckpt.iterdir():
        if old.suffix in (".safetensors", ".pt") and tag not in old.name:
            old.unlink(missing_ok=True)


def load_checkpoint(out: Path, model, optimizer, scaler) -> dict | None:
    pointer = out / CKPT_DIR / "last.json"
    if not pointer.is_file():
        return None
    from safetensors.torch import load_file

    try:
        names = json.loads(pointer.read_text())
        model.load_state_dict(load_file(str(out / CKPT_DIR / names["model"])))
        resume = torch.load(out / CKPT_DIR / names["state"], map_location="cpu", weights_only=True)
    except (ValueError, KeyError, TypeError, OSError, RuntimeError, pickle.UnpicklingError) as e:
        raise UserError(f"cannot resume from {pointer.parent}: {str(e).splitlines()[0] if str(e) else type(e).__name__} "
                        "(move the run directory away to start over)") from None
    optimizer.load_state_dict(resume["optimizer"])
    if scaler and resume.get("scaler"):
        scaler.load_state_dict(resume["scaler"])
    torch.set_rng_state(resume["torch_rng"])
    if torch.cuda.is_available() and resume.get("cuda_rng"):
        torch.cuda.set_rng_state_all(resume["cuda_rng"])
    resume["history"] = json.loads(resume["history"])
    return resume


def write_metrics(out: Path, history: list[dict]) -> None:
    """metrics.jsonl (one line per finished epoch) and training_curves.png, rewritten atomically."""
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    if history:
        from zeroi2v.plots import training_curves
        atomic_write(out / "training_curves.png", lambda tmp: training_curves(history, tmp))


# --- data --------------------------------------------------------------------------------------------
def build_data(cfg: dict, mean, std, rank: int = 0):
    """Train/val datasets and class names from the config (few-shot draw written to the run dir)."""
    from zeroi2v.data import VideoDataset, check_labels, few_shot, flip_label_map, load_annotations

    d, seed = cfg["data"], cfg["train"]["seed"]
    if not d["train_list"] and not d["root"]:
        raise UserError("config needs data.train_list (or data.root with one folder per class)")
    if d["root"] and not Path(d["root"]).is_dir():
        raise UserError(f"data.root not found: {d['root']}")
    train_ann = load_annotations(d["root"], d["train_list"], split="train")
    _check_some_exist(d["root"], train_ann.samples, d["train_list"] or d["root"])
    val_ann = load_annotations(d["root"], d["val_list"], split="val") if d["val_list"] else None
    classes = train_ann.classes or (val_ann.classes if val_ann else None)
    num_classes = cfg["model"]["num_classes"] or (len(classes) if classes else
                                                  1 + max(label for _, label in train_ann.samples))
    check_labels(train_ann.samples, num_classes, d["train_list"] or d["root"])
    if val_ann:
        check_labels(val_ann.samples, num_classes, d["val_list"])
    samples = train_ann.samples
    if d["shots"]:
        samples = few_shot(samples, d["shots"], seed)
    flips = flip_label_map(classes) if d["flip_label_map"] and classes else None
    common = dict(num_frames=cfg["model"]["num_frames"], sampling=d["sampling"], frame_interval=d["frame_interval"],
                  img_size=d["img_size"], mean=mean, std=std, seed=seed, backend=d["backend"])
    train_set = VideoDataset(d["root"], samples, train=True, flip=d["flip"], flip_label_map=flips,
                             rand_augment=d["rand_augment"], random_erasing=d["random_erasing"],
                             short_side=d["short_side"], crop_scale=tuple(d["crop_scale"]), **common)
    val_set = VideoDataset(d["root"], val_ann.samples, train=False, test_clips=1, test_crops=1, **common) if val_ann else None
    return train_set, val_set, classes, num_classes, samples


def _check_some_exist(root, samples, source, probes: int = 32) -> None:
    """Fail early (and clearly) when none of a few listed videos exist: a wrong data.root, not broken files."""
    picks = samples[:: max(1, len(samples) // probes)][:probes]
    if picks and not any(os.path.exists(os.path.join(root or "", rel)) for rel, _ in picks):
        raise UserError(f"none of {len(picks)} videos listed in {source} exist under data.root={root!r} "
                        f"(e.g. {os.path.join(root or '', picks[0][0])}); check data.root")


# --- the loop ----------------------------------------------------------------------------------------
def train(cfg: dict, progress: bool | None = None) -> dict:
    """Train (or resume) the run described by `cfg`; returns the last epoch's metrics."""
    rank, world, device = setup_distributed()
    out = Path(cfg["output"])
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a directory")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out) if rank == 0 else nullcontext()
    with lock:
        if rank == 0:
            previous = out / "config.yaml"
            if previous.is_file() and (out / CKPT_DIR / "last.json").is_file():
                import yaml
                try:
                    old = yaml.safe_load(previous.read_text(encoding="utf-8"))
                except (yaml.YAMLError, UnicodeDecodeError):
                    old = None
                if not isinstance(old, dict):
                    raise UserError(f"{previous} is not a valid config; move the run directory away to start over")
                before, now, default = flatten(old), flatten(cfg), flatten(DEFAULTS)
                changed = [k for k in now if k not in RESUME_MAY_CHANGE and before.get(k, default[k]) != now[k]]
                if changed:
                    raise UserError(f"{out} holds a run with a different config ({', '.join(changed[:4])}); rerun with "
                                    f"its config.yaml to resume it, or choose another output for a new run")
            atomic_write_text(out / "config.yaml", dump_config(cfg))
        return _train(cfg, out, rank, world, device, progress)


def _train(cfg, out, rank, world, device, progress) -> dict:
    t, d = cfg["train"], cfg["data"]
    torch.manual_seed(t["seed"])
    probe = create_model(**{**model_kwargs(cfg, num_classes=1), "pretrained": None})  # normalisation only
    mean = tuple(d["mean"] or probe.data_config["mean"])
    std = tuple(d["std"] or probe.data_config["std"])
    del probe
    train_set, val_set, classes, num_classes, samples = build_data(cfg, mean, std, rank)
    if rank == 0:
        if classes:
            atomic_write_text(out / "classes.txt", "\n".join(classes) + "\n")
        if d["shots"]:
            atomic_write_text(out / "few_shot_train.txt", "".join(f"{p} {label}\n" for p, label in samples))

    torch.manual_seed(t["seed"])
    from zeroi2v.baselines import create_baseline
    model = create_baseline(cfg["model"]["method"], **model_kwargs(cfg, num_classes=num_classes)).to(device)
    model.config["num_classes"] = num_classes
    if t["grad_checkpointing"]:
        model.set_grad_checkpointing(True)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model

    per_step = t["batch_size"] // (world * t["accum_steps"])
    if per_step < 1 or t["batch_size"] % (world * t["accum_steps"]):
        raise UserError(f"train.batch_size={t['batch_size']} (global) must be a multiple of processes × "
                        f"train.accum_steps = {world} × {t['accum_steps']}")
    steps_per_epoch = (len(train_set) // world) // per_step // t["accum_steps"]
    if steps_per_epoch < 1:
        raise UserError(f"{len(train_set)} training videos are fewer than one batch of {t['batch_size']}")
    total_steps = steps_per_epoch * t["epochs"]
    warmup_steps = int(t["warmup_epochs"] * steps_per_epoch)

    def lr_at(step: int) -> float:  # linear warm-up from warmup_start·lr, then cosine to min_lr
        if step < warmup_steps:
            return t["lr"] * (t["warmup_start"] + (1 - t["warmup_start"]) * step / warmup_steps)
        progress_ = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return t["min_lr"] + (t["lr"] - t["min_lr"]) * 0.5 * (1 + math.cos(math.pi * progress_))

    optimizer = torch.optim.AdamW(param_groups(model, t["weight_decay"]), lr=t["lr"], betas=tuple(t["betas"]))
    amp = t["amp"] if t["amp"] != "auto" else ("bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported()
                                                else "fp16" if device.type == "cuda" else "none")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" and device.type == "cuda" else None
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext

    resume = load_checkpoint(out, model, optimizer, scaler)
    epoch, start_step = (resume["epoch"], resume["step"]) if resume else (0, 0)
    history, best = (resume["history"], resume["best_top1"]) if resume else ([], -1.0)
    bad_steps = resume["bad_steps"] if resume else 0
    partial = resume.get("partial_sums") if resume else None  # this epoch's sums before an interruption
    if resume and rank == 0:
        print(f"resuming {out} at epoch {epoch + 1}, step {start_step}/{steps_per_epoch}")

    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum

    handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    from tqdm import tqdm

    show = progress if progress is not None else (rank == 0 and interactive())
    metrics = history[-1] if history else {}
    bar = None
    try:
        while epoch < t["epochs"]:
            train_set.set_epoch(epoch)
            sampler = EpochSampler(len(train_set), rank, world, t["seed"], epoch, True, per_step * t["accum_steps"],
                                   start=start_step * per_step * t["accum_steps"])
            loader = torch.utils.data.DataLoader(
                train_set, batch_size=per_step, sampler=sampler, num_workers=t["num_workers"],
                collate_fn=_collate(), drop_last=True, generator=torch.Generator(),
                persistent_workers=False, pin_memory=device.type == "cuda")
            ddp.train()
            sums = list(partial) if partial else [0.0, 0.0, 0.0, 0.0]  # loss·n, n, skipped videos, seconds
            partial = None
            tick = time.time()
            bar = tqdm(total=steps_per_epoch, initial=start_step, desc=f"epoch {epoch + 1}/{t['epochs']}",
                       disable=not show, dynamic_ncols=True)
            step = start_step
            batches = iter(loader)
            while step < steps_per_epoch:
                lr = lr_at(epoch * steps_per_epoch + step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                step_loss = 0.0
                for micro in range(t["accum_steps"]):
                    batch = next(batches)
                    sums[2] += len(batch["skipped"])
                    video, label = batch["video"].to(device, non_blocking=True), batch["label"].to(device)
                    sync = micro == t["accum_steps"] - 1 or world == 1
                    with (nullcontext() if sync else ddp.no_sync()), autocast():
                        loss = F.cross_entropy(ddp(video).float(), label, label_smoothing=t["label_smoothing"])
                    (scaler.scale(loss / t["accum_steps"]) if scaler else loss / t["accum_steps"]).backward()
                    step_loss += loss.item() / t["accum_steps"]
                # one collective per step: every rank agrees on a non-finite loss and on stopping (a signal
                # may reach the ranks at different steps; all must checkpoint at the same one)
                finite_ranks, stopping = all_sum([float(math.isfinite(step_loss)), float(stop["signal"] is not None)],
                                                 device)
                finite = finite_ranks == world
                if finite:
                    if scaler:
                        scaler.unscale_(optimizer)
                    if t["clip_grad"]:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), t["clip_grad"])
                    (scaler.step(optimizer), scaler.update()) if scaler else optimizer.step()
                    sums[0] += step_loss * per_step
                    sums[1] += per_step
                else:
                    bad_steps += 1
                    if bad_steps > t["max_bad_steps"]:
                        raise UserError(f"non-finite loss at epoch {epoch + 1} step {step + 1}; the last good "
                                        f"checkpoint is kept in {out / CKPT_DIR} (lower train.lr or set train.clip_grad)")
                optimizer.zero_grad(set_to_none=True)
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.2e}",
                                clips_per_s=f"{per_step * t['accum_steps'] * world * (step - start_step) / (time.time() - tick):.1f}")
                if stopping:
                    if rank == 0:
                        save_checkpoint(out, model, optimizer, scaler, dict(epoch=epoch, step=step, history=history,
                                                                            best_top1=best, bad_steps=bad_steps,
                                                                            partial_sums=sums))
                    bar.close()
                    name = signal.Signals(stop["signal"] or signal.SIGTERM).name
                    print(f"{name}: checkpoint saved at epoch {epoch + 1}, step {step}; rerun the same command to resume")
                    return {"interrupted": name}
            bar.close()
            sums[3] += time.time() - tick
            loss_sum, seen, skipped, _ = all_sum(sums, device)
            if seen and skipped / (seen + skipped) > d["max_broken_fraction"]:
                raise UserError(f"{int(skipped)} of {int(seen + skipped)} training samples this epoch could not be "
                                f"decoded (> data.max_broken_fraction={d['max_broken_fraction']}); check data.root")
            metrics = {"epoch": epoch + 1, "train_loss": loss_sum / max(1, seen), "lr": lr,
                       "skipped_videos": int(skipped), "epoch_seconds": round(sums[3], 2)}
            if val_set is not None and ((epoch + 1) % t["eval_every"] == 0 or epoch + 1 == t["epochs"]):
                from zeroi2v.eval import evaluate_dataset
                result = evaluate_dataset(model, val_set, device, rank, world, batch_size=per_step,
                                          num_workers=t["num_workers"], autocast=autocast, progress=False)
                metrics.update({f"val_{k}": v for k, v in result["metrics"].items()})
            history.append(metrics)
            epoch, start_step = epoch + 1, 0
            if rank == 0:
                top1 = metrics.get("val_top1", -1.0)
                if top1 > best:
                    best = top1
                    save_pretrained(model, out / "best")
                save_checkpoint(out, model, optimizer, scaler, dict(epoch=epoch, step=0, history=history,
                                                                    best_top1=best, bad_steps=bad_steps))
                write_metrics(out, history)
                summary = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
                print(summary, flush=True)
    finally:
        if bar is not None:
            bar.close()
        for s, h in handlers.items():
            signal.signal(s, h)
    if rank == 0:
        save_pretrained(model, out)  # the run directory is a model directory (final weights)
        if (out / "best").is_dir() and classes:
            shutil.copy(out / "classes.txt", out / "best" / "classes.txt")
    if dist.is_initialized():
        dist.barrier()
    return metrics


def _collate():
    from zeroi2v.data import collate
    return collate
