"""Training: `zeroi2v train CONFIG.yaml [--set k=v ...]`. `setup` builds everything, `train` is the loop.

One process or many (torchrun: DDP, gloo on CPU, NCCL on GPU). The run directory is also a model
directory. Everything needed to continue is checkpointed atomically, so running the same command on
an unfinished run resumes it exactly (same final weights as a run that never stopped): model,
optimizer, scaler, RNG state, epoch and position inside the epoch. The data order of an epoch is a
function of (seed, epoch) and each sample's augmentation of (seed, epoch, index), so nothing about
the data needs saving. SIGTERM/SIGINT (preemption) checkpoint at the next step and exit.

The schedule is the reference's: AdamW, a linear warm-up from `warmup_start`·lr over `warmup_epochs`
(per step) multiplied by a cosine over all epochs (per epoch, to `min_lr`). Parameter groups: no
weight decay on embeddings and norms (`ZeroI2V.no_weight_decay`), `train.lr_mult` by name prefix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import fnmatch
import json
import math
import os
import pickle
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from tqdm import tqdm

from zeroi2v.build import CKPT_DIR, CONFIG_FILE, build_model, save_pretrained
from zeroi2v.config import Config, dump_config, flatten
from zeroi2v.data import augment_on_device, collate, create_dataset, worker_init
from zeroi2v.data.build import load_split
from zeroi2v.dist import all_sum, interactive, setup_distributed
from zeroi2v.errors import UserError
from zeroi2v.eval import evaluate_dataset
from zeroi2v.fileio import atomic_save_safetensors, atomic_write, atomic_write_json, atomic_write_text
from zeroi2v.memory import lean_training
from zeroi2v.model import count_params
from zeroi2v.plots import training_curves

RESUME_MAY_CHANGE = {"output", "train.num_workers", "train.tensorboard"}  # keys that do not change the result


# --- pieces ----------------------------------------------------------------------------------------
class EpochSampler(torch.utils.data.Sampler):
    """This rank's indices of one epoch: a (seed, epoch) permutation, split across ranks without
    padding, starting at a given position (for mid-epoch resume)."""

    def __init__(self, n: int, rank: int, world: int, seed: int, epoch: int, batch: int, start: int = 0):
        order = np.random.default_rng([seed, epoch]).permutation(n)
        per_rank = (n // world) // batch * batch  # whole batches only
        self.indices = order[rank::world][:per_rank].tolist()[start:]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class RunLock:
    """An OS lock on `output/.lock`: a second live run on the same directory is refused; the kernel
    releases it when the process dies, however it dies."""

    def __init__(self, directory: Path):
        self.path = directory / ".lock"
        self.file = None

    def __enter__(self):
        self.file = open(self.path, "a")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.close()
            raise UserError(
                f"{self.path.parent} is in use by another run; wait for it or choose another output"
            ) from None
        return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)
        self.file.close()


def new_sums() -> dict[str, float]:
    return {"loss": 0.0, "seen": 0.0, "skipped": 0.0, "seconds": 0.0}


@dataclasses.dataclass
class TrainState:
    """Where a run is: what a checkpoint holds besides weights, optimizer, scaler and RNG."""

    epoch: int = 0  # epochs finished
    step: int = 0  # steps done of the next epoch
    history: list[dict] = dataclasses.field(default_factory=list)  # each finished epoch's metrics
    best_top1: float = -1.0
    bad_steps: int = 0  # steps skipped for a non-finite loss, over the whole run
    sums: dict[str, float] = dataclasses.field(default_factory=new_sums)  # the unfinished epoch's loss sums

    def to_checkpoint(self) -> dict:
        """Plain values only (a `weights_only` torch.load reads them back)."""
        fields = dataclasses.asdict(self)
        return {**fields, "history": json.dumps(self.history), "partial_sums": fields.pop("sums")}

    @classmethod
    def from_checkpoint(cls, resume: dict, rank: int) -> TrainState:
        """An interrupted epoch's sums are over all ranks: rank 0 carries them, the others start from 0."""
        sums = resume.get("partial_sums") if rank == 0 else None
        return cls(
            epoch=resume["epoch"],
            step=resume["step"],
            history=json.loads(resume["history"]),
            best_top1=resume["best_top1"],
            bad_steps=resume["bad_steps"],
            sums=dict(sums) if sums else new_sums(),
        )


def save_checkpoint(out: Path, model, optimizer, scaler, state: TrainState) -> Path:
    """Weights (safetensors) + resume state (tensors and plain containers only), then an atomic
    pointer `last.json` naming both; the previous files are removed after the pointer moved. The name
    says how far the run is: `e0002-s000010` = 2 epochs done and 10 steps into the third."""
    ckpt = out / CKPT_DIR
    ckpt.mkdir(parents=True, exist_ok=True)
    tag = f"e{state.epoch:04d}-s{state.step:06d}"
    atomic_save_safetensors(ckpt / f"model-{tag}.safetensors", model.state_dict())
    resume = {
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        **state.to_checkpoint(),
    }
    atomic_write(ckpt / f"state-{tag}.pt", lambda tmp: torch.save(resume, tmp))
    atomic_write_json(ckpt / "last.json", {"model": f"model-{tag}.safetensors", "state": f"state-{tag}.pt"})
    for old in ckpt.iterdir():
        if old.suffix in (".safetensors", ".pt") and tag not in old.name:
            old.unlink(missing_ok=True)
    return ckpt / f"model-{tag}.safetensors"


def load_checkpoint(out: Path, model, optimizer, scaler, rank: int = 0) -> TrainState | None:
    """Restore weights, optimizer, scaler and RNG from the last checkpoint; its `TrainState` (None: none)."""
    pointer = out / CKPT_DIR / "last.json"
    if not pointer.is_file():
        return None
    try:
        names = json.loads(pointer.read_text())
        model.load_state_dict(load_file(str(out / CKPT_DIR / names["model"])))
        resume = torch.load(out / CKPT_DIR / names["state"], map_location="cpu", weights_only=True)
    except (ValueError, KeyError, TypeError, OSError, RuntimeError, pickle.UnpicklingError) as e:
        raise UserError(
            f"cannot resume from {pointer.parent}: {str(e).splitlines()[0] if str(e) else type(e).__name__} "
            "(move the run directory away to start over)"
        ) from None
    optimizer.load_state_dict(resume["optimizer"])
    if resume.get("scaler"):
        scaler.load_state_dict(resume["scaler"])
    torch.set_rng_state(resume["torch_rng"])
    if torch.cuda.is_available() and resume.get("cuda_rng"):
        torch.cuda.set_rng_state_all(resume["cuda_rng"])
    return TrainState.from_checkpoint(resume, rank)


def write_metrics(out: Path, history: list[dict]) -> None:
    """metrics.jsonl (one line per finished epoch) and training_curves.png, rewritten atomically."""
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    if history:
        atomic_write(out / "training_curves.png", lambda tmp: training_curves(history, tmp))


def param_groups(model, weight_decay: float, lr_mult: dict) -> list[dict]:
    """AdamW groups over trainable parameters: (lr multiplier, decay or not). The multiplier of a
    parameter is that of the longest `lr_mult` key that matches its name (1 if none): a key is a name
    prefix (`backbone`) or, with `*`/`?`, a glob over names and their prefixes (`*.attn.qkv.adapter_in`:
    every block's q/k/v-input adapter). No weight decay on `model.no_weight_decay()` (embeddings and
    norms). timm's `param_groups_weight_decay` would also exempt every bias; the reference decays
    adapter and classifier biases, so this keeps them decayed."""

    def under(name: str, key: str) -> bool:
        if any(c in key for c in "*?["):
            return fnmatch.fnmatchcase(name, key) or fnmatch.fnmatchcase(name, key + ".*")
        return name == key or name.startswith(key + ".")

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    unused = [k for k in lr_mult if not any(under(n, k) for n in names)]
    if unused:
        raise UserError(
            f"config train.lr_mult: {unused} match no trainable parameter (top-level names: "
            f"{sorted({n.split('.')[0] for n in names})})"
        )
    skip = model.no_weight_decay()
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        prefixes = [k for k in lr_mult if under(name, k)]
        mult = float(lr_mult[max(prefixes, key=len)]) if prefixes else 1.0
        decay = 0.0 if name in skip else weight_decay
        group = groups.setdefault((mult, decay), {"params": [], "names": [], "lr_mult": mult, "weight_decay": decay})
        group["params"].append(p)
        group["names"].append(name)
    return list(groups.values())


def lr_factor(step: int, steps_per_epoch: int, t) -> float:
    """Warm-up (linear from warmup_start to 1, per step) × cosine over all epochs (per epoch)."""
    warmup_steps = min(t.warmup_epochs, t.epochs) * steps_per_epoch
    warm = 1.0 if step >= warmup_steps else t.warmup_start + (1 - t.warmup_start) * step / warmup_steps
    floor = t.min_lr / t.lr
    cosine = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (step // steps_per_epoch) / t.epochs))
    return warm * cosine


def tensorboard_writer(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("train.tensorboard needs the tensorboard package: pip install 'zeroi2v[tensorboard]'") from None
    return SummaryWriter(str(out / "tensorboard"))


def _absolute(cfg: Config) -> Config:
    """Data and weight paths made absolute, so the saved config works from any directory."""
    d = cfg.data
    paths = {
        k: os.path.abspath(v)
        for k, v in (("root", d.root), ("train_list", d.train_list), ("val_list", d.val_list))
        if v
    }
    pretrained = cfg.model.pretrained
    if pretrained and not pretrained.startswith("builtin:"):
        pretrained = os.path.abspath(pretrained)
    return dataclasses.replace(
        cfg, data=dataclasses.replace(d, **paths), model=dataclasses.replace(cfg.model, pretrained=pretrained)
    )


RUN_FILES = (
    "config.yaml",
    CONFIG_FILE,
    "classes.txt",
    "model.safetensors",
    "metrics.jsonl",
    "training_curves.png",
    "few_shot_train.txt",
)  # what a run writes at its top level (and its folders CKPT_DIR, best/)


def _check_output_is_a_run(out: Path) -> None:
    """Refuse an output folder whose files a run would overwrite but that is not a zeroi2v run (a data
    root, a project folder with its own config.yaml, a merged model): training must not clobber them."""
    try:
        ours = json.loads((out / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        ours = None
    if isinstance(ours, dict) and ours.get("format") == "zeroi2v":
        if ours.get("merged") and (ours.get("config") or {}).get("method", "zeroi2v") == "zeroi2v":
            raise UserError(f"output {out} holds a merged model, not a run; choose another output directory")
        return
    clash = [name for name in RUN_FILES if (out / name).exists()]
    if clash:
        raise UserError(
            f"output {out} is not a zeroi2v run but holds {', '.join(clash)}, which training would "
            f"overwrite; choose a new or empty output directory"
        )


def _check_resumable(out: Path, cfg: Config) -> None:
    """A run directory with a checkpoint resumes only with the same settings (keys that cannot change
    the result excepted)."""
    previous = out / "config.yaml"
    if not (previous.is_file() and (out / CKPT_DIR / "last.json").is_file()):
        return
    try:
        old = yaml.safe_load(previous.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        old = None
    if not isinstance(old, dict):
        raise UserError(f"{previous} is not a valid config; move the run directory away to start over")
    before, now, default = flatten(old), flatten(cfg.to_dict()), flatten(Config().to_dict())
    changed = [k for k in now if k not in RESUME_MAY_CHANGE and before.get(k, default[k]) != now[k]]
    if changed:
        raise UserError(
            f"{out} holds a run with a different config ({', '.join(changed[:4])}); rerun with "
            f"its config.yaml to resume it, or choose another output for a new run"
        )


# --- setup -----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Run:
    """Everything the loop needs, built by `setup`."""

    cfg: Config
    out: Path
    rank: int
    world: int
    device: torch.device
    model: torch.nn.Module  # the model (saved, evaluated)
    step_model: torch.nn.Module  # what the training step calls: DDP and/or compiled
    train_set: object
    val_set: object
    classes: list | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: object
    per_step: int  # clips per process per micro-step
    steps_per_epoch: int
    notes: list


def _clips_per_step(t, d, world: int) -> int:
    """Videos per process per micro-step (each gives data.repeat_clips clips)."""
    per_step = t.batch_size // (world * t.accum_steps * d.repeat_clips)
    if per_step < 1 or t.batch_size % (world * t.accum_steps * d.repeat_clips):
        raise UserError(
            f"train.batch_size={t.batch_size} (global, in clips) must be a multiple of processes × "
            f"train.accum_steps × data.repeat_clips = {world} × {t.accum_steps} × {d.repeat_clips}"
        )
    return per_step


def _classes(cfg: Config, train_ann, val_ann) -> tuple[list | None, int]:
    """The class names (if the data names them) and the number of classes."""
    classes = train_ann.classes or (val_ann.classes if val_ann else None)
    if classes and cfg.model.num_classes and len(classes) != cfg.model.num_classes:
        raise UserError(
            f"model.num_classes={cfg.model.num_classes} but the data names {len(classes)} classes; "
            "set model.num_classes to that (or null: from the data)"
        )
    return classes, cfg.model.num_classes or (
        len(classes) if classes else 1 + max(label for _, label in train_ann.samples)
    )


def _steps_per_epoch(t, train_set, world: int, per_step: int) -> int:
    steps = (len(train_set) // world) // per_step // t.accum_steps
    if steps < 1:
        unit = world * t.accum_steps  # the batch splits evenly over processes and accumulation steps
        fits = (len(train_set) // world) * world // unit * unit
        fix = f"set train.batch_size to at most {fits}" if fits else "add training videos"
        raise UserError(f"{len(train_set)} training videos are fewer than one batch of {t.batch_size}; {fix}")
    return steps


def _precision(amp: str, device: torch.device) -> tuple[str, torch.amp.GradScaler, object]:
    """`train.amp` resolved ("auto": bf16 on a GPU that has it, else fp16 on GPU, none on CPU), its scaler
    (fp16 only) and its autocast context factory."""
    if amp == "auto":
        amp = "none" if device.type != "cuda" else "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    return amp, scaler, (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext


def method_label(m) -> str:
    """What a model config trains: a peer's name, ZeroI2V, or (no temporal heads, no temporal embedding)
    the image model on each frame, averaged."""
    if m.method != "zeroi2v" or m.head_offsets or m.temporal_embedding:
        return m.method
    return "frame averaging: no temporal heads or temporal embedding"


def _summary(cfg: Config, run: Run, num_classes: int, amp: str) -> list[str]:
    """The two lines that say what the run will do."""
    t, classes, model = cfg.train, run.classes, run.model
    named = f" ({', '.join(classes[:4])}{', ...' if len(classes) > 4 else ''})" if classes else ""
    return [
        f"run {cfg.output}: {len(run.train_set)} training videos"
        + (f", {len(run.val_set)} validation" if run.val_set else "")
        + f", {num_classes} classes{named}",
        f"model {cfg.model.backbone} ({method_label(cfg.model)}): {count_params(model, trainable_only=True):,} of "
        f"{count_params(model):,} parameters trained; {plural(run.world, 'process', 'processes')} on {run.device}, "
        f"precision {amp}, "
        f"{plural(t.epochs, 'epoch')} × {plural(run.steps_per_epoch, 'step')} of {t.batch_size} clips",
    ]


def setup(cfg: Config, build=build_model) -> Run:
    """Data, model, optimizer and precision of a run, checked before any work starts. `build`: the model
    factory (ModelConfig -> model), e.g. a study's variant of a method."""
    t, d = cfg.train, cfg.data
    rank, world, device = setup_distributed()
    notes = []
    per_step = _clips_per_step(t, d, world)
    train_ann = load_split(cfg, "train")
    val_ann = load_split(cfg, "val") if d.val_list else None
    classes, num_classes = _classes(cfg, train_ann, val_ann)

    torch.manual_seed(t.seed)
    model = build(cfg.model_config(num_classes)).to(device)
    if not cfg.model.pretrained and cfg.model.freeze:
        notes.append(
            "WARNING: model.pretrained is null and the backbone is frozen: training adapters on random "
            "features will not learn much; set model.pretrained to image weights"
        )
    train_set = create_dataset(cfg, "train", model=model)
    val_set = create_dataset(cfg, "val", model=model) if val_ann else None
    steps_per_epoch = _steps_per_epoch(t, train_set, world, per_step)
    left_out = len(train_set) - steps_per_epoch * per_step * t.accum_steps * world
    if left_out > len(train_set) // 10:
        notes.append(
            f"{left_out} of {len(train_set)} training videos are left out of each epoch (batches are full; "
            f"other videos each epoch): a train.batch_size that divides the data evenly uses them all"
        )
    if t.warmup_epochs > t.epochs:
        notes.append(
            f"train.warmup_epochs={t.warmup_epochs} is longer than the run: warm-up capped at "
            f"{plural(t.epochs, 'epoch')}"
        )

    lean_training(model)
    model.set_grad_checkpointing(t.grad_checkpointing)
    groups = param_groups(model, t.weight_decay, t.lr_mult)
    optimizer = torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas))
    for g in groups if t.lr_mult else []:
        notes.append(
            f"lr group ×{g['lr_mult']:g} (weight decay {g['weight_decay']:g}): "
            f"{len(g['names'])} tensors, e.g. {g['names'][0]}"
        )
    amp, scaler, autocast = _precision(t.amp, device)
    step_model = model
    if world > 1:
        step_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if t.compile:
        step_model = torch.compile(step_model, fullgraph=world == 1)
    run = Run(
        cfg,
        Path(cfg.output),
        rank,
        world,
        device,
        model,
        step_model,
        train_set,
        val_set,
        classes,
        optimizer,
        scaler,
        autocast,
        per_step,
        steps_per_epoch,
        notes,
    )
    notes[:0] = _summary(cfg, run, num_classes, amp)
    return run


# --- train: the run's directory, then the loop -----------------------------------------------------
RESUME_HINT = "rerun the same command to resume"


def plural(n: int, noun: str, many: str | None = None) -> str:
    return f"{n} {noun if n == 1 else many or noun + 's'}"


def exit_code(interrupted: str) -> int:
    """A command's exit status after training stopped on signal `interrupted` ('SIGTERM' -> 143, 'SIGINT' -> 130)."""
    return 128 + signal.Signals[interrupted].value


def interruption_message(result: dict) -> str:
    """What an interrupted `fit` did, for its caller to print (with how to go on)."""
    where = ", before its evaluation" if result["before_evaluation"] else ""
    return (
        f"{result['interrupted']}: checkpoint saved in epoch {result['epoch'] + 1} after step "
        f"{result['step']}/{result['steps_per_epoch']}{where} ({result['checkpoint']})"
    )


def train(cfg: Config, progress: bool | None = None, build=build_model) -> dict:
    """`zeroi2v train`: `fit`, and on SIGTERM/SIGINT say where it stopped and how to resume."""
    result = fit(cfg, progress, build)
    if "interrupted" in result and int(os.environ.get("RANK", 0)) == 0:
        print(f"{interruption_message(result)}; {RESUME_HINT}", flush=True)
    return result


def fit(cfg: Config, progress: bool | None = None, build=build_model) -> dict:
    """Train (or resume) the run described by `cfg`. Returns the last epoch's metrics, or after a
    SIGTERM/SIGINT checkpoint the interruption: {"interrupted": SIGNAL, "epoch", "step", ...}."""
    cfg = _absolute(cfg)
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a directory")
    rank = int(os.environ.get("RANK", 0))
    created = [p for p in (out, *out.parents) if not p.exists()]  # out and the parents made for it, innermost first
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    try:
        with RunLock(out) if rank == 0 else nullcontext():
            if rank == 0:
                _check_output_is_a_run(out)
                _check_resumable(out, cfg)
            run = setup(cfg, build)
            if rank == 0:
                _write_run_files(run)
            return loop(run, progress if progress is not None else (rank == 0 and interactive()))
    except (UserError, KeyboardInterrupt):
        if rank == 0 and created and not (out / CKPT_DIR).exists():  # failed before any work: leave nothing
            shutil.rmtree(out, ignore_errors=True)
            for folder in created[1:]:  # the parents only if still empty: never what another run put there
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise


def _write_run_files(run: Run) -> None:
    """config.yaml, model.json, classes.txt (and the few-shot list): the run directory before any step."""
    out, cfg = run.out, run.cfg
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    atomic_write_json(
        out / CONFIG_FILE, {"format": "zeroi2v", "merged": False, "config": dataclasses.asdict(run.model.config)}
    )
    if run.classes:
        atomic_write_text(out / "classes.txt", "\n".join(run.classes) + "\n")
    if cfg.data.shots:
        atomic_write_text(out / "few_shot_train.txt", "".join(f"{p} {label}\n" for p, label in run.train_set.samples))


class SignalFlag:
    """While entered, SIGTERM/SIGINT only set a flag: the loop checkpoints at its next step and returns."""

    def __init__(self):
        self.signum = None

    def __enter__(self):
        self.handlers = {s: signal.signal(s, self._set) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc):
        for s, h in self.handlers.items():
            signal.signal(s, h)

    def _set(self, signum, frame):
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum or signal.SIGTERM).name

    def stopped(self, part, *args) -> bool:
        """`part(*args)`: True if a signal stopped it. A signal sent to the whole process group
        (preemption) can reach a DataLoader worker that has just started, before `worker_init` set its
        handler: torch then raises "DataLoader worker ... is killed by signal". With the signal flagged,
        in a single process, that is the same stop; anything else is raised."""
        try:
            return part(*args)
        except RuntimeError as e:
            if self.signum is None or "DataLoader worker" not in str(e) or dist.is_initialized():
                raise
            return True


def loop(run: Run, show: bool) -> dict:
    """Epochs from the last checkpoint to the end: each epoch's steps, then its end (evaluate, checkpoint)."""
    t = run.cfg.train
    state = load_checkpoint(run.out, run.model, run.optimizer, run.scaler, run.rank)
    if run.rank == 0:
        announce(run, state)
    state = state or TrainState()
    writer = tensorboard_writer(run.out) if t.tensorboard and run.rank == 0 else None
    try:
        with SignalFlag() as stop:
            while state.epoch < t.epochs:
                if stop.stopped(train_epoch, run, state, stop, show, writer):
                    return interrupt(run, state, stop)
                if stop.stopped(end_epoch, run, state, stop, show, writer):
                    return interrupt(run, state, stop, before_evaluation=True)
    finally:
        if writer:
            writer.close()
    finish(run)
    return state.history[-1] if state.history else {}


def announce(run: Run, state: TrainState | None) -> None:
    """The run's notes, and whether it starts, resumes or has nothing left to do."""
    t = run.cfg.train
    for note in run.notes:
        print(note, file=sys.stderr if note.startswith("WARNING") else sys.stdout, flush=True)
    if state and state.epoch >= t.epochs:
        print(f"{run.out} already finished ({plural(t.epochs, 'epoch')}); nothing to do")
    elif state:
        print(
            f"resuming {run.out}: {plural(state.epoch, 'epoch')} done, continuing epoch {state.epoch + 1} at "
            f"step {state.step}/{run.steps_per_epoch}"
        )


def epoch_batches(run: Run, state: TrainState):
    """This rank's batches of epoch `state.epoch`, from step `state.step` on."""
    t = run.cfg.train
    run.train_set.set_epoch(state.epoch)
    clips = run.per_step * t.accum_steps
    sampler = EpochSampler(len(run.train_set), run.rank, run.world, t.seed, state.epoch, clips, state.step * clips)
    loader = torch.utils.data.DataLoader(
        run.train_set,
        batch_size=run.per_step,
        sampler=sampler,
        num_workers=t.num_workers,
        collate_fn=collate,
        worker_init_fn=worker_init,
        drop_last=True,
        pin_memory=run.device.type == "cuda",
    )
    return iter(loader)


def to_device(batch: dict, run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """A collated batch on the training device: (video, label); a `data.gpu_augment` batch is augmented
    there."""
    return augment_on_device(batch, run.device, run.train_set), batch["label"].to(run.device)


def train_step(run: Run, batches, sums: dict) -> float:
    """Forward and backward over `accum_steps` micro-batches (gradients synchronised on the last); the loss."""
    t, step_loss = run.cfg.train, 0.0
    for micro in range(t.accum_steps):
        batch = next(batches)
        sums["skipped"] += len(batch["skipped"])
        video, label = to_device(batch, run)
        sync = micro == t.accum_steps - 1 or run.world == 1
        with nullcontext() if sync else run.step_model.no_sync(), run.autocast():
            loss = F.cross_entropy(run.step_model(video).float(), label, label_smoothing=t.label_smoothing)
        run.scaler.scale(loss / t.accum_steps).backward()
        step_loss += loss.item() / t.accum_steps
    return step_loss


def optimizer_step(run: Run, state: TrainState, all_finite: bool, step_loss: float) -> None:
    """Apply the step's gradients, or skip a step whose loss is not finite on some rank (too many: stop)."""
    t = run.cfg.train
    if all_finite:
        run.scaler.unscale_(run.optimizer)
        if t.clip_grad:
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), t.clip_grad)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        state.sums["loss"] += step_loss * run.per_step
        state.sums["seen"] += run.per_step
    else:
        state.bad_steps += 1
        if state.bad_steps > t.max_bad_steps:
            raise UserError(
                f"non-finite loss at epoch {state.epoch + 1} step {state.step + 1}; the last good "
                f"checkpoint is kept in {run.out / CKPT_DIR} (lower train.lr or set train.clip_grad)"
            )
    run.optimizer.zero_grad(set_to_none=True)


def train_epoch(run: Run, state: TrainState, stop: SignalFlag, show: bool, writer) -> bool:
    """The steps of epoch `state.epoch` from step `state.step`; True if a signal stopped it (after a step)."""
    t, first = run.cfg.train, state.step
    batches = epoch_batches(run, state)
    run.step_model.train()
    tick = time.time()
    bar = tqdm(
        total=run.steps_per_epoch,
        initial=first,
        desc=f"epoch {state.epoch + 1}/{t.epochs}",
        disable=not show,
        dynamic_ncols=True,
    )
    with bar:
        for step in range(first, run.steps_per_epoch):
            global_step = state.epoch * run.steps_per_epoch + step
            lr = t.lr * lr_factor(global_step, run.steps_per_epoch, t)
            for group in run.optimizer.param_groups:
                group["lr"] = lr * group["lr_mult"]
            step_loss = train_step(run, batches, state.sums)
            # one collective per step: every rank agrees on a non-finite loss and on stopping (a signal
            # may reach the ranks at different steps; all must checkpoint at the same one)
            finite_ranks, stopping = all_sum(
                [float(math.isfinite(step_loss)), float(stop.signum is not None)], run.device
            )
            optimizer_step(run, state, finite_ranks == run.world, step_loss)
            state.step = step + 1
            speed = t.batch_size * (step + 1 - first) / (time.time() - tick)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.3g}", clips_per_s=f"{speed:.1f}")
            if writer:
                writer.add_scalar("train/loss", step_loss, global_step + 1)
                writer.add_scalar("train/lr", lr, global_step + 1)
            if stopping:
                return True
    state.sums["seconds"] += time.time() - tick
    return False


def end_epoch(run: Run, state: TrainState, stop: SignalFlag, show: bool, writer) -> bool:
    """Metrics over all ranks, the evaluation when due, the checkpoint; True if a signal stopped the
    evaluation (the epoch's steps are kept: the resume only evaluates)."""
    t, epoch, sums = run.cfg.train, state.epoch, state.sums
    loss_sum, seen, skipped = all_sum([sums[k] for k in ("loss", "seen", "skipped")], run.device)
    if seen and skipped / (seen + skipped) > run.cfg.data.max_broken_fraction:
        raise UserError(
            f"{int(skipped)} of {int(seen + skipped)} training samples this epoch could not be "
            f"decoded (> data.max_broken_fraction={run.cfg.data.max_broken_fraction}); check data.root"
        )
    metrics = {
        "epoch": epoch + 1,
        "train_loss": loss_sum / max(1, seen),
        "lr": t.lr * lr_factor((epoch + 1) * run.steps_per_epoch - 1, run.steps_per_epoch, t),  # its last step's
        "skipped_videos": int(skipped),
        "epoch_seconds": round(sums["seconds"], 2),
    }
    if run.val_set is not None and ((epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs):
        result = evaluate_dataset(
            run.model,
            run.val_set,
            run.device,
            run.rank,
            run.world,
            batch_size=run.per_step,
            num_workers=t.num_workers,
            autocast=run.autocast,
            progress=show,
            should_stop=lambda: stop.signum is not None,
        )
        if result is None:
            return True
        if result["metrics"]["num_videos"] == 0:
            raise UserError(
                f"none of the {len(run.val_set)} validation videos could be read (e.g. "
                f"{run.val_set.path(0)}); check data.val_list and data.root"
            )
        metrics.update({f"val_{k}": v for k, v in result["metrics"].items()})
    state.history.append(metrics)
    state.epoch, state.step, state.sums = epoch + 1, 0, new_sums()
    if run.rank == 0:
        record_epoch(run, state, metrics, writer)
    return False


def record_epoch(run: Run, state: TrainState, metrics: dict, writer) -> None:
    """Rank 0, after an epoch: the best model so far, the checkpoint, metrics.jsonl and the log line."""
    top1 = metrics.get("val_top1", -1.0)
    if top1 > state.best_top1:
        state.best_top1 = top1
        save_pretrained(run.model, run.out / "best")
    save_checkpoint(run.out, run.model, run.optimizer, run.scaler, state)
    write_metrics(run.out, state.history)
    if writer:
        for key, value in metrics.items():
            if key.startswith("val_") and isinstance(value, float):
                writer.add_scalar(f"val/{key[4:]}", value, state.epoch * run.steps_per_epoch)
        writer.flush()
    print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()), flush=True)


def interrupt(run: Run, state: TrainState, stop: SignalFlag, before_evaluation: bool = False) -> dict:
    """Checkpoint where a signal stopped the run (the ranks stop together: one collective for the sums)."""
    state.sums = dict(zip(state.sums, all_sum(list(state.sums.values()), run.device), strict=True))
    path = save_checkpoint(run.out, run.model, run.optimizer, run.scaler, state) if run.rank == 0 else None
    return {
        "interrupted": stop.name,
        "epoch": state.epoch,
        "step": state.step,
        "steps_per_epoch": run.steps_per_epoch,
        "before_evaluation": before_evaluation,
        "checkpoint": str(path.relative_to(run.out)) if path else None,
    }


def finish(run: Run) -> None:
    """The run directory becomes a model directory (final weights); every rank waits for it."""
    if run.rank == 0:
        save_pretrained(run.model, run.out)
        if (run.out / "best").is_dir() and run.classes:
            shutil.copy(run.out / "classes.txt", run.out / "best" / "classes.txt")
    if dist.is_initialized():
        dist.barrier()
