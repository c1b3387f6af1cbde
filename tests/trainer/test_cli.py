import json

import numpy as np
import pytest
from typer.testing import CliRunner

from trainer.checkpoint import latest_checkpoint
from trainer.cli import app
from trainer.data import load_data

runner = CliRunner()


def _write(tmp_path, name, obj):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def test_train_then_predict_reproduces_the_final_training_loss(tmp_path, make_spec):
    spec = make_spec(optim={"iterations": 120})
    spec_path = _write(tmp_path, "spec.json", spec.model_dump(mode="json"))
    result = runner.invoke(app, ["train", str(spec_path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "completed at step 120/120" in result.output
    ckpt = latest_checkpoint(tmp_path / "run")
    data = load_data(spec.data)
    np.savez(tmp_path / "train.npz", X=data.X_train.numpy(), y=data.y_train.numpy())
    out = runner.invoke(app, ["predict", str(ckpt.path), str(tmp_path / "train.npz"), "-o", str(tmp_path / "p.npz")])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output.strip().splitlines()[-1])
    assert summary["loss"] == pytest.approx(ckpt.meta["final_train_loss"], rel=1e-5)
    assert np.load(tmp_path / "p.npz")["predictions"].shape == (40, 1)


def test_classification_predict_reports_accuracy(tmp_path, make_spec):
    spec = make_spec(regime="regular", data={"source": "digits", "test_fraction": 0.2, "seed": 0, "limit": 300},
                     loss="cross_entropy", model={"width": 32},
                     optim={"name": "adam", "lr_hidden": 0.01, "lr_outer": 0.01, "iterations": 150},
                     constraint={"radius": None})
    spec_path = _write(tmp_path, "spec.json", spec.model_dump(mode="json"))
    assert runner.invoke(app, ["train", str(spec_path), "--out", str(tmp_path / "run")]).exit_code == 0
    from sklearn.datasets import load_digits

    digits = load_digits()
    # the digits source scales pixels 0..16 to [0, 1]; predict takes inputs in the units the source yields
    np.savez(tmp_path / "d.npz", X=(digits.images[:, None] / 16).astype(np.float32), y=digits.target)
    ckpt = str(latest_checkpoint(tmp_path / "run").path)
    out = runner.invoke(app, ["predict", ckpt, str(tmp_path / "d.npz")])
    assert out.exit_code == 0, out.output
    images = json.loads(out.output.strip().splitlines()[-1])
    assert images["accuracy"] > 0.8
    # The same digits as flat rows (n, 64) are standardized per channel just the same.
    np.savez(tmp_path / "flat.npz", X=(digits.data / 16).astype(np.float32), y=digits.target)
    flat = json.loads(runner.invoke(app, ["predict", ckpt, str(tmp_path / "flat.npz")]).output.strip().splitlines()[-1])
    assert flat["accuracy"] == pytest.approx(images["accuracy"])


def test_train_rejects_a_bad_spec_naming_the_field(tmp_path):
    bad = {"regime": "constrained", "model": {"arch": "shallow", "width": 7}, "data": {"source": "digits"},
           "optim": {"lr": -1, "iterations": 5}}
    result = runner.invoke(app, ["train", str(_write(tmp_path, "bad.json", bad)), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "optim.lr" in result.output


def test_train_rejects_malformed_json_and_bad_npz(tmp_path, make_spec):
    (tmp_path / "x.json").write_text("{not json")
    assert runner.invoke(app, ["train", str(tmp_path / "x.json"), "--out", str(tmp_path / "o")]).exit_code == 2
    np.savez(tmp_path / "bad.npz", X=np.array([[1.0, np.nan]]), y=np.array([1.0]))
    spec_json = make_spec(data={"source": "npz", "path": str(tmp_path / "bad.npz")}).model_dump(mode="json")
    result = runner.invoke(app, ["train", str(_write(tmp_path, "s.json", spec_json)), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "X" in result.output


def test_sweep_command_trains_the_sweep_file_and_writes_one_row_per_config(tmp_path, make_spec):
    sweep = {"name": "cli", "base": make_spec(optim={"iterations": 30}).model_dump(mode="json"),
             "grid": {"optim.lr_hidden": [0.1, 0.2], "constraint.radius": [1.0, None]},
             "objective": {"metric": "train_loss", "mode": "min"}}
    out = runner.invoke(app, ["sweep", str(_write(tmp_path, "sw.json", sweep)), "-o", str(tmp_path / "r.json")])
    assert out.exit_code == 0, out.output
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["axes"] == ["optim.lr_hidden", "constraint.radius"]
    rows = written["items"]
    assert [r["params"] for r in rows] == [{"optim.lr_hidden": h, "constraint.radius": r}
                                           for h in (0.1, 0.2) for r in (1.0, None)]
    assert all(r["status"] == "succeeded" and r["final_metrics"]["train_loss"] > 0 for r in rows)


def test_sweep_command_still_reads_the_old_format(tmp_path, make_spec):
    sweep = {"base": make_spec(optim={"iterations": 30}).model_dump(mode="json"),
             "lr_hidden": [0.1, 0.2], "lr_outer": [0.1], "radius": [1.0, None]}
    out = runner.invoke(app, ["sweep", str(_write(tmp_path, "sw.json", sweep)), "-o", str(tmp_path / "r.json")])
    assert out.exit_code == 0, out.output
    rows = json.loads((tmp_path / "r.json").read_text())["items"]
    assert len(rows) == 4 and {r["params"]["optim.lr_hidden"] for r in rows} == {0.1, 0.2}


def test_sweep_command_names_the_bad_axis_value(tmp_path, make_spec):
    sweep = {"base": make_spec(optim={"iterations": 30}).model_dump(mode="json"),
             "grid": {"model.width": [16, 21], "nope": [1]}}
    out = runner.invoke(app, ["sweep", str(_write(tmp_path, "sw.json", sweep))])
    assert out.exit_code == 2
    assert "grid.nope: unknown axis; allowed:" in out.output
    sweep["grid"].pop("nope")
    out = runner.invoke(app, ["sweep", str(_write(tmp_path, "sw.json", sweep))])
    assert out.exit_code == 2
    assert "grid.model.width[1]: 21 must be even in the constrained regime" in " ".join(out.output.split())


def test_predict_with_the_wrong_number_of_features_is_one_clear_error(tmp_path, make_spec):
    spec_path = _write(tmp_path, "spec.json", make_spec(optim={"iterations": 20}).model_dump(mode="json"))
    assert runner.invoke(app, ["train", str(spec_path), "--out", str(tmp_path / "run")]).exit_code == 0
    ckpt = latest_checkpoint(tmp_path / "run")
    width = ckpt.tensors["W"].shape[1]
    np.savez(tmp_path / "wide.npz", X=np.ones((5, width + 3), np.float32))
    out = runner.invoke(app, ["predict", str(ckpt.path), str(tmp_path / "wide.npz")])
    assert out.exit_code == 2
    assert f"X: {width + 3} features per sample, the model expects {width}" in out.output
    assert out.exception is None or isinstance(out.exception, SystemExit)  # no traceback
    np.savez(tmp_path / "short_y.npz", X=np.ones((5, width), np.float32), y=np.ones(3, np.float32))
    out = runner.invoke(app, ["predict", str(ckpt.path), str(tmp_path / "short_y.npz")])
    assert out.exit_code == 2 and "y: 3 targets for 5 samples" in out.output


def test_a_rerun_says_it_resumes_and_a_finished_run_says_there_is_nothing_to_do(tmp_path, make_spec):
    from tests.trainer.stop_after import StopAfter
    from trainer.loop import train

    spec = make_spec(optim={"iterations": 100}, metrics_every=10, checkpoint_every=20)
    spec_path = _write(tmp_path, "spec.json", spec.model_dump(mode="json"))
    stopped = train(spec, tmp_path / "run", callbacks=StopAfter(40))
    assert stopped.status == "stopped"
    resumed = runner.invoke(app, ["train", str(spec_path), "--out", str(tmp_path / "run")])
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming from step {stopped.step} of 100" in resumed.output
    again = runner.invoke(app, ["train", str(spec_path), "--out", str(tmp_path / "run")])
    assert again.exit_code == 0, again.output
    assert "already holds the finished run (step 100)" in again.output and "nan" not in again.output
    assert "train_loss" in again.output  # the summary still shows the finished run's metrics


def test_threads_follow_the_size_of_a_step():
    from trainer.spec import JobSpec
    from trainer.threads import SMALL_STEP_MACS, step_macs, threads_for

    small = JobSpec.model_validate({"regime": "regular", "model": {"arch": "shallow", "width": 40},
                                    "data": {"source": "synthetic", "n": 200, "d": 20},
                                    "optim": {"name": "gd", "lr": 0.1, "iterations": 10}})
    assert threads_for(step_macs(small, 200, 20, 1), cores=8) == 1
    big = small.model_copy(update={"model": small.model.model_copy(update={"width": 2000})})
    assert step_macs(big, 20_000, 500, 1) > SMALL_STEP_MACS
    assert threads_for(step_macs(big, 20_000, 500, 1), cores=8) == 8


def test_train_takes_an_explicit_thread_count(tmp_path, make_spec):
    import torch

    spec_path = _write(tmp_path, "spec.json", make_spec(optim={"iterations": 5}).model_dump(mode="json"))
    before = torch.get_num_threads()
    try:
        out = runner.invoke(app, ["train", str(spec_path), "--out", str(tmp_path / "run"), "--threads", "2"])
        assert out.exit_code == 0, out.output
        assert torch.get_num_threads() == 2
        out = runner.invoke(app, ["train", str(spec_path), "--out", str(tmp_path / "run2")])
        assert torch.get_num_threads() == 1  # a tiny net: one thread by default
    finally:
        torch.set_num_threads(before)
