"""benchmarks.ablations: every row is a valid change of configs/demo.yaml, and the generated document
reports mean ± std, single seeds and missing cells honestly (no training here)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def ablations():
    return load_benchmark("ablations")


def test_every_row_is_a_valid_change_of_the_recipe(ablations):
    from zeroi2v.config import load_config

    recipe_epochs = load_config(ablations.RECIPE, ["model.pretrained=x.safetensors"]).train.epochs
    for name, (_, rows) in ablations.GROUPS.items():
        for _label, changes in rows:
            sets = [f"{k}={json.dumps(v)}" for k, v in changes.items() if not k.startswith("_")]
            load_config(ablations.RECIPE, ["model.pretrained=x.safetensors", *sets])
        # the epochs group names the recipe's epochs explicitly (a quick study runs fewer for the others)
        reference = [label for label, c in rows if not c or c == {"train.epochs": recipe_epochs}]
        assert len(reference) == 1 and "recipe" in reference[0], f"{name}: exactly one row is the recipe itself"


def test_document_reports_seeds_and_missing_cells(ablations, tmp_path):
    size = {"train_per_class": 10, "val_per_class": 5, "epochs": 3}
    results = {}
    for seed, top in ((0, 0.9), (1, 0.8)):
        results[ablations.run_key("basic", {"model.head_offsets": []}, seed, size)] = {"top1": top}
    results[ablations.run_key("complex", {"model.head_offsets": []}, 0, size)] = {"top1": 0.5}
    results[ablations.run_key("basic", {"model.head_offsets": [1]}, 0, size)] = {"error": ["boom"]}
    text = ablations.write_doc(
        tmp_path / "a.md",
        results,
        ["heads", "blocks"],
        ["basic", "complex"],
        size,
        [0, 1],
        {"blocks": "no key"},
        None,
        "python -m benchmarks.ablations --quick",
        20,
    )
    assert "| [] (no temporal heads) | 85.0 ± 7.1 | 50.0 (1 of 2 seeds) |" in text
    assert ablations.fmt([0.5], 1) == "50.0 (1 seed)" and ablations.fmt([0.5, 0.7], 3) == "60.0 ± 14.1 (2 of 3 seeds)"
    assert "not run" in text and "_Not run: no key_" in text and "Runs that failed" in text
    assert (tmp_path / "a.md").read_text() == text


def test_gelu_variant_is_a_model_of_its_own_and_not_linear():
    """The GELU row's model has GELU adapters (so it cannot be folded); LinearAdapter itself is untouched."""
    import torch

    from benchmarks.gelu_adapters import GELUAdapter, build_gelu_model
    from zeroi2v.adapters import LinearAdapter
    from zeroi2v.model import model_config

    cfg = model_config("vit_tiny_patch16_224", num_frames=2, num_classes=3, img_size=32, patch_size=8, depth=1)
    model = build_gelu_model(cfg)
    adapters = [m for m in model.modules() if isinstance(m, LinearAdapter)]
    assert adapters and all(type(m) is GELUAdapter for m in adapters)
    a = adapters[0]
    torch.nn.init.normal_(a.up.weight)
    x, zero = torch.randn(4, a.down.in_features), torch.zeros(4, a.down.in_features)
    assert not torch.allclose(a(2 * x) - a(zero), 2 * (a(x) - a(zero)), atol=1e-4)  # not affine
    linear = LinearAdapter(a.down.in_features, hidden=a.down.out_features, scale=a.scale)
    linear.load_state_dict(a.state_dict())
    assert torch.allclose(linear(2 * x) - linear(zero), 2 * (linear(x) - linear(zero)), atol=1e-4)


def test_stability_rows_show_adapter_gain_and_residual_stream(ablations, tmp_path):
    size = {"train_per_class": 10, "val_per_class": 5, "epochs": 3}
    diverged = {"train.lr": 8e-3, "train.warmup_epochs": 1}
    results = {
        ablations.run_key("basic", diverged, 0, size): {
            "top1": 0.125,
            "max_adapter_gain": 14.98,
            "residual_rms": [24.0, 85.9, 86.8, 87.6],
        }
    }
    text = ablations.write_doc(
        tmp_path / "a.md", results, ["stability"], ["basic"], size, [0], {}, None, "python -m benchmarks.ablations", 20
    )
    assert "| warm-up 1 epoch, lr 8e-3 | 12.5 (1 seed) | 15.0 | 24.0, 85.9, 86.8, 87.6 |" in text
    assert "| lr 1.6e-2 | not run | not run | not run |" in text


def test_side_by_side_invocations_keep_each_others_runs(ablations, tmp_path):
    """Two invocations (one per family) share one cache file: neither overwrites the other's runs."""
    cache = tmp_path / "results.json"
    ablations.store(cache, "a", {"top1": 0.5})
    stale = json.loads(cache.read_text())  # what the other invocation read at its start
    ablations.store(cache, "b", {"top1": 0.7})
    assert set(stale) == {"a"} and json.loads(cache.read_text()) == {"a": {"top1": 0.5}, "b": {"top1": 0.7}}


def test_health_of_a_trained_run(ablations, tmp_path, ramps, one_thread):
    """health() reads a trained run's adapter maps and its residual stream, block by block."""
    from tests.conftest import write_config
    from zeroi2v.config import load_config
    from zeroi2v.train import train

    cfg = load_config(write_config(tmp_path / "c.yaml", ramps, tmp_path / "run", train__epochs=1, model__freeze=True))
    train(cfg, progress=False)
    h = ablations.health(str(tmp_path / "run"))
    assert len(h["residual_rms"]) == 2 and all(r > 0 for r in h["residual_rms"])
    assert 1.0 <= h["max_adapter_gain"] < 2.0  # one epoch from a zero up-projection: near the identity


@pytest.mark.parametrize(
    "script, argv, message",
    [
        ("ablations", ["--epochs", "0"], "--epochs must be >= 1"),
        ("ablations", ["--seeds", "-1"], "--seeds must be >= 0"),
        ("ablations", ["--recipe", "/nonexistent.yaml"], "no such file"),
        ("accuracy", ["--lrs", "0.004", "-1"], "--lrs must all be > 0"),
        ("accuracy", ["--train-per-class", "0"], "--train-per-class must be >= 1"),
        ("accuracy", ["--backbone", "/nonexistent.safetensors"], "no such file"),
        ("reliability", ["--bogus"], "unrecognized arguments"),
        ("reliability", ["--out", "/nonexistent/reliability.md"], "cannot write"),
    ],
)
def test_study_scripts_refuse_bad_options_in_one_line(script, argv, message, tmp_path, monkeypatch, capsys):
    """A wrong option is refused before any video is written or any run starts: usage error (exit 2), one line."""
    module = load_benchmark(script)
    work = {"ablations": ["--work", str(tmp_path / "w")], "accuracy": ["--out", str(tmp_path / "w")]}.get(script, [])
    monkeypatch.setattr("sys.argv", [f"{script}.py", *argv, *work])
    with pytest.raises(SystemExit) as exit_info:
        module.main() if script == "accuracy" else module.main(argv + work)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_gelu_variant_trains_through_the_engine(tmp_path, ramps, one_thread):
    """`python -m benchmarks.gelu_adapters train CFG`: the engine trains the GELU model it is given."""
    from benchmarks.gelu_adapters import main
    from tests.conftest import write_config

    cfg = write_config(tmp_path / "c.yaml", ramps, tmp_path / "run", train__epochs=1, model__freeze=True)
    assert main(["train", str(cfg), "--set", "train.batch_size=4"]) == 0
    assert "val_top1" in (tmp_path / "run" / "metrics.jsonl").read_text()
