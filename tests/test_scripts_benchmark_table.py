"""scripts/benchmark_table.py (JSON lines -> Markdown) and scripts/gpu_check.sh's commands."""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path


from scripts import benchmark_table

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"device": "cuda:0", "device_name": "NVIDIA H200", "netG": "spade", "crop_size": 256,
          "aspect_ratio": 1.0, "ngf": 64, "ndf": 64, "semantic_nc": 184, "batchSize": 8,
          "amp": "bf16", "channels_last": True}


def _row(metric, value, **extra):
    import json
    return json.dumps({"metric": metric, "value": value, "unit": "x", **CONFIG, **extra})


def _cells(text):
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| config")]


def test_compare_and_plain_runs_give_one_row_per_configuration():
    lines = [
        "some log line", "{not json", "",
        # a --compare run: both implementations, plus ratios that the table leaves out
        _row("train_iter", 0.5, spade_impl="conv"), _row("inference", 0.01, spade_impl="conv"),
        _row("train_iter", 0.25, spade_impl="fast"), _row("inference", 0.004, spade_impl="fast"),
        _row("peak_memory", 2048.4, spade_impl="conv"), _row("peak_memory", 1024.6, spade_impl="fast"),
        _row("ratio_train_iter", 0.5), _row("train_gflop_per_iter", 99.0, spade_impl="fast"),
        # a plain run at 512x1024, batch 4, fp32
        _row("train_iter", 2.0, spade_impl="fast", crop_size=1024, aspect_ratio=2.0, batchSize=4,
             amp="none", channels_last=False, semantic_nc=36),
        _row("train_peak_memory", 30000.0, spade_impl="fast", crop_size=1024, aspect_ratio=2.0,
             batchSize=4, amp="none", channels_last=False, semantic_nc=36),
    ]
    text = benchmark_table.table(benchmark_table.read_rows(lines))
    assert text.startswith("device: NVIDIA H200\n")
    assert _cells(text) == [
        ["spade 256x256 ngf64 nc184 b8 bf16 channels_last conv", "0.5", "16", "0.01", "2048"],
        ["spade 256x256 ngf64 nc184 b8 bf16 channels_last fast", "0.25", "32", "0.004", "1025"],
        ["spade 512x1024 ngf64 nc36 b4 fp32 fast", "2", "2", "-", "30000"],
    ]


def test_checkpointing_comparison_gives_a_row_per_variant_with_memory_above_idle():
    lines = [_row(m, v, gradient_checkpointing=on, batchSize=1, amp="none", channels_last=False,
                  use_vae=True)
             for on, (it, mem) in ((False, (0.125, 2250.2)), (True, (0.25, 1515.6)))
             for m, v in (("train_iter", it), ("train_peak_memory_above_idle", mem),
                          ("train_memory_idle", 645.0), ("train_peak_memory_above_state", 1.0))]
    lines.append(_row("ratio_train_iter", 2.0, batchSize=1, amp="none", channels_last=False, use_vae=True))
    assert _cells(benchmark_table.table(benchmark_table.read_rows(lines))) == [
        ["spade 256x256 ngf64 nc184 b1 fp32 vae no_grad_ckpt", "0.125", "8", "-", "2250 above idle"],
        ["spade 256x256 ngf64 nc184 b1 fp32 vae grad_ckpt", "0.25", "4", "-", "1516 above idle"],
    ]  # the ratio (no variant) is in the JSON lines, not in the table


def test_a_failed_run_is_a_row_and_the_cli_writes_the_file(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(_row("train_iter", 0.125, spade_impl="fast") + "\n"
                    + '{"metric": "failed", "config": "cityscapes b4", "reason": "timed out after 90 s"}\n')
    out = tmp_path / "table.md"
    result = subprocess.run([sys.executable, "scripts/benchmark_table.py", str(rows), "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert out.read_text() == result.stdout
    cells = _cells(result.stdout)
    assert cells[0][:3] == ["spade 256x256 ngf64 nc184 b8 bf16 channels_last fast", "0.125", "64"]
    assert cells[1] == ["cityscapes b4", "failed: timed out after 90 s", "-", "-", "-"]


def _commands(*args, env=None):
    result = subprocess.run(["bash", "scripts/gpu_check.sh", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines()]


def test_gpu_check_benchmark_commands_parse():
    """Every benchmark command of gpu_check.sh is accepted by scripts/benchmark.py's parser and
    asks for what its label says (GPU 0, label channels, size, batch, precision)."""
    from scripts.benchmark import BenchmarkOptions

    commands = _commands("--print-commands")
    assert len(commands) == 7
    for label, command in commands:
        words = shlex.split(command)
        assert words[1] == "scripts/benchmark.py"
        opt = BenchmarkOptions().parse(words[2:], save=False)
        assert opt.gpu_ids == [0] and opt.ngf == 64 and opt.bench_random_vgg and not opt.no_vgg_loss
        height = round(opt.crop_size / opt.aspect_ratio)
        assert f"{height}x{opt.crop_size}" in label and f"nc{opt.semantic_nc} " in label, label
        assert f"b{opt.batchSize} " in label and ("fp32" if opt.amp == "none" else opt.amp) in label, label
        assert opt.channels_last == ("channels_last" in label) and opt.compare == ("conv vs fast" in label)
        assert opt.compare_checkpointing == ("grad_ckpt" in label) and opt.use_vae == ("vae" in label)


def test_gpu_check_data_without_downloads(tmp_path):
    """The samples folder when there is one; otherwise synthetic scenes with the same channels."""
    import os
    commands = _commands("--print-commands", env=dict(os.environ, UDGAN_SAMPLES=str(tmp_path / "none")))
    assert all("--dataset_mode synthetic" in c for _, c in commands)
    samples = tmp_path / "samples"
    (samples / "coco_stuff" / "train_label").mkdir(parents=True)
    (samples / "cityscapes" / "gtFine" / "train").mkdir(parents=True)
    commands = _commands("--print-commands", env=dict(os.environ, UDGAN_SAMPLES=str(samples)))
    assert all(f"--dataroot {samples}/" in c for _, c in commands)
    assert sum("--dataset_mode coco" in c for _, c in commands) == 5
    assert sum("--dataset_mode cityscapes" in c for _, c in commands) == 2


def test_gpu_check_without_a_gpu_says_so(tmp_path):
    import os

    # the GPU (if any) is hidden from the script, so this runs on every machine
    env = dict(os.environ, GPU_CHECK_OUT=str(tmp_path / "out"), CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 3
    assert "no CUDA device" in result.stdout and "--cpu-smoke" in result.stdout
    assert "torch " in result.stdout and "optional, missing:" in result.stdout
    assert (tmp_path / "out" / "gpu_check.log").read_text().count("no CUDA device") == 1
