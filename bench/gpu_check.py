"""GPU readiness in one run (issue 13): what bench/gpu_check.sh runs; writes bench/results/gpu.json.

On a CUDA machine (the default; all on cuda:0, in under 5 minutes):
  1. shallow constrained (n=1000, d=20, m=100) steps/s: narrownet's learner vs the plain PyTorch reference
     (bench/reference.py) on the same device;
  2. a 49-config learning-rate sweep: one vectorized program vs 49 sequential runs (ours and the reference);
  3. images/s of a training step: an MLP and ResNet-18 (block4_width 64 and 512), fp32 vs bf16 autocast (the
     trainer puts ResNet-18 in channels_last on CUDA in both);
  4. one job through `narrownet serve` with `device: cuda`, end to end (submit -> succeeded).

`--cpu` runs the same steps at tiny sizes on the CPU (bf16 autocast is CUDA-only, so both precisions are fp32
there; the job has `device: cpu`): tests/bench/test_gpu_check.py runs it so this script cannot rot.

    bench/gpu_check.sh [--cpu] [--out bench/results/gpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_resnet import make_learner, random_images  # noqa: E402
from bench.bench_trainer import LR_GRID, sync, time_learner, time_reference  # noqa: E402
from narrownet.cluster import Serve  # noqa: E402
from narrownet.processes import wait_until  # noqa: E402
from trainer.deep import DeepLearner  # noqa: E402
from trainer.grid import SweepFile, expand  # noqa: E402
from trainer.shallow.learner import ConfigGrid  # noqa: E402
from trainer.spec import JobSpec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    "cuda": {"n": 1000, "d": 20, "m": 100, "steps": 300, "sweep_steps": 100, "batch": 256, "image_steps": 20,
             "mlp_hidden": [1024, 1024], "job_iterations": 2000},
    "cpu": {"n": 32, "d": 4, "m": 8, "steps": 5, "sweep_steps": 2, "batch": 2, "image_steps": 1,
            "mlp_hidden": [16], "job_iterations": 20},
}


def shallow_spec(size: dict[str, Any], device: str) -> JobSpec:
    return JobSpec.model_validate({
        "name": "gpu-check", "regime": "constrained",
        "model": {"arch": "shallow", "width": size["m"], "activation": "tanh"},
        "data": {"source": "synthetic", "n": size["n"], "d": size["d"], "seed": 0}, "loss": "square",
        "optim": {"name": "gd", "momentum": 0.9, "lr": 0.1, "iterations": size["steps"]},
        "constraint": {"radius": 5.0}, "seed": 0, "device": device})


def check_shallow(size: dict[str, Any], device: torch.device) -> dict[str, Any]:
    spec = shallow_spec(size, device.type)
    steps = size["steps"]
    ours = time_learner(spec, ConfigGrid.single(spec), steps, device)
    ref = time_reference(spec, steps, device)
    return {"n": size["n"], "d": size["d"], "m": size["m"], "steps": steps,
            "narrownet_steps_per_s": steps / ours, "reference_steps_per_s": steps / ref,
            "narrownet_over_reference": ref / ours}


def check_sweep(size: dict[str, Any], device: torch.device) -> dict[str, Any]:
    spec = shallow_spec(size, device.type)
    steps = size["sweep_steps"]
    configs = [c.spec for c in expand(SweepFile(base=spec, grid={"optim.lr_hidden": LR_GRID,
                                                                 "optim.lr_outer": LR_GRID}))]
    vectorized = time_learner(spec, ConfigGrid.of(configs), steps, device)
    sequential = sum(time_learner(c, ConfigGrid.single(c), steps, device) for c in configs)
    reference = sum(time_reference(c, steps, device) for c in configs)
    return {"configs": len(configs), "steps": steps, "vectorized_s": vectorized, "sequential_narrownet_s": sequential,
            "sequential_reference_s": reference, "vectorized_over_sequential_narrownet": sequential / vectorized,
            "vectorized_over_sequential_reference": reference / vectorized}


def images_per_s(learner: DeepLearner, batch: int, steps: int, device: torch.device) -> float:
    learner.step(0)  # warm-up: allocator, cuDNN autotuning, oneDNN caches
    times = []
    for round_ in range(3):
        sync(device)
        t0 = time.perf_counter()
        for s in range(steps):
            learner.step((1 + round_ * steps + s) % learner.steps_per_epoch)
        sync(device)
        times.append((time.perf_counter() - t0) / steps)
    return batch / statistics.median(times)


def mlp_learner(size: dict[str, Any], device: torch.device, precision: str) -> DeepLearner:
    batch = size["batch"]
    spec = JobSpec.model_validate({
        "regime": "constrained", "model": {"arch": "mlp", "hidden": size["mlp_hidden"]},
        "data": {"source": "cifar10"}, "loss": "cross_entropy",
        "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "batch_size": batch, "iterations": 1_000_000},
        "constraint": {"radius": 1.0}, "seed": 0, "device": device.type, "precision": precision})
    return DeepLearner(spec, random_images(batch * (3 * size["image_steps"] + 2)), device)


def check_images(size: dict[str, Any], device: torch.device) -> dict[str, Any]:
    batch, steps = size["batch"], size["image_steps"]
    data = random_images(batch * (3 * steps + 2))
    result: dict[str, Any] = {"batch": batch, "image": "32x32x3", "bf16_is_autocast": device.type == "cuda"}
    models: dict[str, Any] = {
        "mlp": lambda precision: mlp_learner(size, device, precision),
        "resnet18_block4_64": lambda precision: make_learner("constrained", 1.0, 64, batch, data, device, precision),
        "resnet18_block4_512": lambda precision: make_learner("constrained", 1.0, 512, batch, data, device,
                                                              precision),
    }
    for name, build in models.items():
        fp32 = images_per_s(build("fp32"), batch, steps, device)
        bf16 = images_per_s(build("bf16"), batch, steps, device)
        result[name] = {"fp32_images_per_s": fp32, "bf16_channels_last_images_per_s": bf16,
                        "bf16_over_fp32": bf16 / fp32}
    return result


def check_serve_job(size: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """One job through `narrownet serve` (SQLite, SQLite broker, its worker) on `device`, submit to succeeded."""
    spec = shallow_spec(size, device.type).model_dump(mode="json")
    spec["optim"]["iterations"] = size["job_iterations"]
    spec["metrics_every"] = max(1, size["job_iterations"] // 10)
    home = Path(tempfile.mkdtemp(prefix="narrownet-gpu-check-"))
    serve = Serve(home / "home", {"NARROWNET_LOG_LEVEL": "INFO"})
    try:
        key = serve.start()
        with httpx.Client(base_url=serve.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            t0 = time.monotonic()
            response = client.post("/v1/jobs", json=spec)
            response.raise_for_status()
            job_id = response.json()["id"]

            def finished() -> dict[str, Any] | None:
                job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
                return job if job["status"] in ("succeeded", "failed", "cancelled") else None

            job = wait_until(finished, 180, f"job {job_id} on {device}", poll=0.2)
            seconds = time.monotonic() - t0
        return {"device": device.type, "queue": response.json()["queue"], "status": job["status"],
                "error": job["error"], "iterations": size["job_iterations"], "submit_to_finished_s": seconds,
                "final_metrics": job["final_metrics"]}
    finally:
        serve.stop()
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (the test suite's mode)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu.json")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device (torch.cuda.is_available() is False); on a machine without one "
              "run `bench/gpu_check.sh --cpu`", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu else "cuda")
    size = SIZES[device.type]
    if args.cpu:
        torch.set_num_threads(1)
    started = time.monotonic()
    result: dict[str, Any] = {
        "mode": device.type, "torch": torch.__version__, "python": platform.python_version(),
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.machine(),
    }
    for name, check in (("shallow", check_shallow), ("sweep", check_sweep), ("images", check_images),
                        ("serve_job", check_serve_job)):
        t0 = time.monotonic()
        result[name] = check(size, device)
        result[name]["seconds"] = time.monotonic() - t0
        print(f"{name}: {json.dumps(result[name])}", flush=True)
    result["seconds"] = time.monotonic() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")
    return 0 if result["serve_job"]["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
