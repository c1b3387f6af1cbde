"""bench/gpu_check.sh --cpu: the GPU readiness check, at tiny sizes on the CPU, run as a user runs it."""

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_cpu_mode_writes_every_figure_and_runs_a_job_through_serve(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run([str(ROOT / "bench" / "gpu_check.sh"), "--cpu", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

    result = json.loads(out.read_text())
    assert result["mode"] == "cpu"
    assert result["shallow"]["narrownet_steps_per_s"] > 0 and result["shallow"]["reference_steps_per_s"] > 0
    assert result["sweep"]["configs"] == 49
    assert result["sweep"]["vectorized_over_sequential_narrownet"] > 0
    for model in ("mlp", "resnet18_block4_64", "resnet18_block4_512"):
        assert result["images"][model]["fp32_images_per_s"] > 0, model
        assert result["images"][model]["bf16_channels_last_images_per_s"] > 0, model
    assert result["serve_job"]["status"] == "succeeded", result["serve_job"]
    assert result["serve_job"]["device"] == "cpu"
