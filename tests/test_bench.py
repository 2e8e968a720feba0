"""`zeroi2v bench`: STDHA equals the reference-style implementation, a toy-size smoke run (checks n/a where
a toy cannot test a claim, headings naming the toy model), the timing helper, the CPU peak-memory
reader, the doc assembly (the loader section: test_loader_bench.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import timm
import torch

from zeroi2v.bench_report import assemble, checks, compile_markdown
from zeroi2v.cost_tables import reference_style_attention, train_step_child
from zeroi2v.stdha import STDHAttention
from zeroi2v.timing import cpu_peak_bytes, interleaved_times

ROOT = Path(__file__).resolve().parents[1]


def test_stdha_equals_reference_style_implementation():
    vit = timm.create_model(
        "vit_base_patch16_224", pretrained=False, depth=1, img_size=32, patch_size=8, embed_dim=192, num_heads=3
    )
    attn = STDHAttention(vit.blocks[0].attn, 4, (-1, 1)).eval()
    x = torch.randn(8, 17, 192)
    with torch.no_grad():
        ours = attn(x)
        ref = reference_style_attention(attn, x.transpose(0, 1), 4, [(0, 64, -1), (64, 128, 1)]).transpose(0, 1)
    assert (ours - ref).abs().max() < 1e-5


def test_bench_smoke_as_a_command(tmp_path):
    out = tmp_path / "docs" / "benchmarks.md"
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "benchmarks_decode.md").write_text("## Decoding\n\nseek-and-stop table\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "zeroi2v.bench",
            "--tiny",
            "--device",
            "cpu",
            "--what",
            "inference",
            "stdha",
            "--repeats",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert text.startswith("# Benchmarks")
    assert "ZeroI2V merged" in text and "reference-style" in text and "machine:" in text and "command:" in text
    assert "seek-and-stop table" in text  # the decode section is merged in
    assert "bench/accuracy.md" in text  # listed as not generated yet
    data = json.loads((out.parent / "bench" / "cost.json").read_text())
    rows = {r["method"]: r for r in data["inference"][0]}
    assert set(rows) == {
        "plain image model",
        "ZeroI2V merged",
        "ZeroI2V unmerged",
        "AIM",
        "ST-Adapter",
        "joint attention",
    }
    assert rows["ZeroI2V merged"]["extra_params_vs_plain"] == 8 * 96  # the T×D temporal table only
    assert abs(rows["ZeroI2V merged"]["flops_vs_plain"] - 1) < 0.01  # (per-frame heads of the toy image model: <1%)
    for peer in ("ZeroI2V unmerged", "AIM", "ST-Adapter", "joint attention"):
        assert rows[peer]["flops_vs_plain"] > 1.02, peer  # each shows its extra cost
    assert data["stdha"][0]["max_abs_error"] < 1e-4
    assert any(c["check"].startswith("STDHA") for c in data["checks"])
    assert list((out.parent / "bench").glob("inference_*.png"))
    # a first bench run at toy size reports no failure: each check passes or says why it cannot apply
    assert "**FAIL**" not in text
    statuses = {c["check"].split(" (")[0]: c["ok"] for c in data["checks"]}
    assert statuses["merged ZeroI2V params = image model + T·D"] is True
    assert statuses["merged ZeroI2V adds no FLOPs: ≤ image model + 0.1%"] is True
    assert statuses["merged ZeroI2V throughput ≥ 0.98× image model"] is None  # toy: overheads dominate
    assert statuses["STDHA attention ≥ 1.5× faster than reference-style"] is None  # GPU target, CPU run
    # headings name the model measured, not the full-size backbone it was shrunk from
    assert "### Inference: vit_base_patch16_clip_quickgelu_224 resized (depth 2, width 96" in text
    assert "toy model" in text


def test_training_measurement_child():
    """One training configuration as the bench's subprocesses run it (frozen vs full: what trains)."""
    from zeroi2v.cost_tables import TINY

    spec = dict(
        method="zeroi2v",
        freeze=True,
        amp="none",
        checkpointing=True,
        backbone="vit_base_patch16_224",
        frames=4,
        batch=1,
        device="cpu",
        steps=2,
        timm_kwargs=TINY,
    )
    frozen = train_step_child(spec)
    full = train_step_child({**spec, "freeze": False, "checkpointing": False})
    assert frozen["step_s"] > 0 and frozen["peak_mem_mb"] > frozen["resident_mb"] > 0  # activations on top
    assert 0 < frozen["trainable"] < full["trainable"] / 2
    # Adam's two moments and the gradients of every weight: full fine-tuning holds far more
    assert full["resident_mb"] > 1.5 * frozen["resident_mb"] and full["peak_mem_mb"] > frozen["peak_mem_mb"]
    bf16 = train_step_child({**spec, "amp": "bf16", "checkpointing": False})
    assert bf16["peak_mem_mb"] > bf16["resident_mb"]


def test_assemble_orders_generated_sections(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "cost.md").write_text("## Cost and speed\n\ncost\n")
    (tmp_path / "bench" / "accuracy.md").write_text("# Accuracy at equal budget\n\nacc\n")
    text = assemble(tmp_path / "benchmarks.md")
    assert text.index("## Cost and speed") < text.index("## Accuracy at equal budget")  # titles demoted to sections
    assert "benchmarks_decode.md" in text  # missing section listed
    assert (tmp_path / "benchmarks.md").read_text() == text


def test_checks_fail_only_where_they_apply():
    def table(toy, throughput):
        plain = {
            "method": "plain image model",
            "backbone": "b",
            "model": "b",
            "toy": toy,
            "frames": 8,
            "embed_dim": 4,
            "flops_vs_plain": 1.0,
            "extra_params_vs_plain": 0,
            "throughput_vs_plain": 1.0,
        }
        merged = {
            **plain,
            "method": "ZeroI2V merged",
            "flops_vs_plain": 0.99,
            "extra_params_vs_plain": 32,
            "throughput_vs_plain": throughput,
        }
        return [plain, merged]

    stdha = {
        "backbone": "b",
        "frames": 8,
        "core_max_abs_error": 1e-7,
        "core_rows": [{"implementation": "reference-style (clone K/V + manual softmax)", "time_vs_ours": 1.2}],
        "rows": [{"implementation": "reference-style (clone K/V + manual softmax)", "time_vs_ours": 1.1}],
    }
    real_gpu = checks([table(False, 0.9)], [{**stdha, "device": "cuda"}], [], "cuda")
    assert [c["ok"] for c in real_gpu] == [False, True, True, False]  # slow merged model and STDHA fail on a GPU
    toy_cpu = checks([table(True, 0.9)], [{**stdha, "device": "cpu"}], [], "cpu")
    assert [c["ok"] for c in toy_cpu] == [None, True, True, None]
    assert "classifier runs once per clip" in toy_cpu[1]["measured"]


def test_interleaved_times_rotates_and_counts():
    calls = []
    times = interleaved_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then the order rotates per round
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3} and all(t >= 0 for t in times["a"])


def test_cpu_peak_bytes_from_the_profilers_public_trace():
    def step():
        a = torch.ones(1000, 1000)  # 4 MB, freed before b: the peak is 8 MB, not 12
        del a
        b = torch.ones(2000, 1000)
        return b.sum()

    peak = cpu_peak_bytes(step)
    assert 8_000_000 <= peak < 12_000_000


def test_compile_markdown():
    env = {
        "machine": "m",
        "torch": "t",
        "timm": "t",
        "torchvision": "t",
        "python": "p",
        "torch_threads": 2,
        "device": "cpu",
        "dtype": "fp32",
        "command": "zeroi2v bench --compile",
        "date": "d",
    }
    row = {
        "part": "inference, ZeroI2V merged",
        "batch": 2,
        "eager_ms": 10.0,
        "compiled_ms": 8.0,
        "speedup": 1.25,
        "eager_clips_per_s": 200.0,
        "compiled_clips_per_s": 250.0,
        "compile_s": 30.0,
        "max_abs_difference": 1e-7,
    }
    text = compile_markdown(
        env, [{"model": "vit_small_patch16_224", "frames": 8, "device": "cpu", "dtype": "float32", "rows": [row]}]
    )
    assert "## torch.compile" in text and "**1.25×**" in text and "fullgraph=True" in text
    assert "vs the plain image model" not in text  # a section generated before that measurement existed
    text = compile_markdown(
        env,
        [
            {
                "model": "vit_small_patch16_224",
                "frames": 8,
                "device": "cpu",
                "dtype": "float32",
                "rows": [{**row, "vs_image_model": {"eager": 0.97, "compiled": 0.91}}],
            }
        ],
    )
    assert "eager **0.970×**, compiled (both compiled) **0.910×**" in text


def test_bench_refuses_counts_below_one_in_one_line(tmp_path, capsys):
    from zeroi2v.cli import main as cli_main

    for args, message in [
        (["--batch", "0"], "--batch must be >= 1"),
        (["--repeats", "0"], "--repeats must be >= 1"),
        (["--frames", "8", "0"], "--frames must be >= 1"),
        (["--train-batch", "0", "--loader-seconds", "0"], "--train-batch must be >= 1; --loader-seconds"),
        (
            ["--model-rate", "133", "0", "--cores-per-gpu", "0"],
            "--cores-per-gpu must be >= 1; --model-rate must be > 0",
        ),
    ]:
        assert cli_main(["bench", "--tiny", "--device", "cpu", "--out", str(tmp_path / "b.md"), *args]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not list(tmp_path.iterdir())


def test_bench_never_overwrites_a_markdown_file_it_did_not_write(tmp_path, capsys):
    from zeroi2v.cli import main as cli_main

    mine = tmp_path / "docs" / "benchmarks.md"  # a project's own page, where `zeroi2v bench` writes by default
    mine.parent.mkdir()
    mine.write_text("# Our numbers\n")
    for out, message in ((mine, "not a file zeroi2v bench wrote"), (tmp_path, "a directory")):
        assert cli_main(["bench", "--tiny", "--device", "cpu", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, err
    assert mine.read_text() == "# Our numbers\n" and not (mine.parent / "bench").exists()


def test_render_of_the_committed_json_gives_the_committed_docs(tmp_path):
    """`zeroi2v bench --render` (after a wording change) rebuilds exactly what the runs wrote: sections
    and the assembled doc, charts in the order a run draws them."""
    import shutil

    from zeroi2v.bench import main

    shutil.copytree(ROOT / "docs", tmp_path, dirs_exist_ok=True)  # the doc also takes sections from beside it
    assert main(["--render", "--out", str(tmp_path / "benchmarks.md")]) == 0
    for name in ["benchmarks.md"] + [f"bench/{p.name}" for p in (ROOT / "docs" / "bench").glob("*.md")]:
        assert (tmp_path / name).read_text() == (ROOT / "docs" / name).read_text(), name
