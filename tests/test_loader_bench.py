"""`zeroi2v bench --loader`: a smoke run on tiny generated videos writes the section with every row
(source video, prepared video, prepared frames; with and without gpu_augment and repeat_clips), the
decode/augment/collate split, the cores per GPU, the issue's ratio lines and the decode counts."""

import json

import pytest

from zeroi2v.bench import main
from zeroi2v.loader_bench import SOURCES, step_groups


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    out = tmp_path_factory.mktemp("loader") / "docs" / "benchmarks.md"
    argv = ["--loader", "--tiny", "--device", "cpu", "--model-rate", "100", "300", "--cores-per-gpu", "4"]
    assert main([*argv, "--out", str(out)]) == 0
    bench = out.parent / "bench"
    return out, (bench / "loader.md").read_text(), json.loads((bench / "loader.json").read_text())


def test_every_row_with_its_split_and_cores_per_gpu(section):
    _, text, data = section
    rows = {(r["data"], r["gpu_augment"], r["repeat_clips"]): r for r in data["rows"]}
    assert set(rows) == {(s, g, n) for s in SOURCES for g in (False, True) for n in (1, 2)}
    for (_, on_device, _), r in rows.items():
        parts = [r["decode_ms"], r["augment_ms"], r["collate_ms"]]
        assert all(p > 0 for p in parts) and r["cpu_ms"] == pytest.approx(sum(parts))
        assert r["clips_per_s_per_core"] == pytest.approx(1000 / r["cpu_ms"])
        assert [p["model_rate"] for p in r["per_model_rate"]] == [100, 300]
        for p in r["per_model_rate"]:
            assert p["cores_per_gpu"] == pytest.approx(p["model_rate"] * r["cpu_ms"] / 1000)
            assert p["gpu_waits"] == pytest.approx(max(0, 1 - 4 * 1000 / r["cpu_ms"] / p["model_rate"]))
        assert r["less_cpu_than_today"] > 0 and r["clips_per_round"] == 2
        assert ("device_ms" in r) == on_device and r.get("device_ms", 1) > 0
        assert f"| {r['label']} | {r['decode_ms']:.1f} | {r['augment_ms']:.1f} |" in text
    assert rows[("source video", False, 1)]["less_cpu_than_today"] == 1
    assert "| data | decode ms | augment ms | collate ms | **CPU ms per clip** |" in text
    assert "cores per GPU at 100 clips/s | cores per GPU at 300 clips/s | 4 cores per GPU feed" in text


def test_targets_verdict_and_decode_counts(section):
    out, text, data = section
    assert text.startswith("## Loader: will the GPU wait?") and "## Loader: will the GPU wait?" in out.read_text()
    assert len(data["targets"]) == 4
    for line in ("prepared frames vs source video: ≥ 5×", "prepared video vs source video: ≥ 2×",
                 "prepared frames + gpu_augment vs today's path: ≥ 10×", "prepared frames: ≤ 50 ms"):  # fmt: skip
        assert any(line in t["target"] for t in data["targets"])
        assert f"{line}" in text
    assert text.count("- ✓ ") + text.count("- ✗ ") == 4
    assert "**Today's path** (source video, CPU augmentation):" in text and "the GPU waits" in text
    assert "load average (1, 5, 15 min)" in text and "- machine:" in text
    decoded = data["decoded_frames_per_clip"]
    assert decoded["prepared frames"] == 8  # exactly the sampled frames' files
    assert 8 <= decoded["prepared video"] <= decoded["source video"]
    steps = data["augment_steps_ms"]
    assert set(steps) == {"source video", "prepared frames"}
    columns = [name for name, _, _ in step_groups(tuple(data["steps"]))]
    assert "rand_augment + random_resized_crop" in columns  # the K400 order: RandAugment computes the box only
    assert " + ".join(columns).split(" + ") == data["steps"]
    assert all(list(ms) == columns and all(v >= 0 for v in ms.values()) for ms in steps.values())
    assert "| data | resize | rand_augment + random_resized_crop | flip | normalize | sum |" in text
    assert data["decoders"][0]["decoder"].startswith("zeroi2v sampler")
    assert data["decoders"][0]["mean_abs_diff_vs_ours"] == 0


def test_render_rebuilds_the_section_from_its_json(section):
    out, text, _ = section
    (out.parent / "bench" / "loader.md").write_text("stale")
    assert main(["--render", "--out", str(out)]) == 0
    assert (out.parent / "bench" / "loader.md").read_text() == text
