"""trainer.loop.train_pack: each config of a pack keeps a lone job's run directory (checkpoints, metrics.jsonl,
outcome), resumes from it alone or in a pack, and leaves the pack alone (stop, drop, divergence, bad checkpoint)."""

import json
from pathlib import Path

import pytest
import torch

from tests.trainer.stop_after import StopAfter
from trainer.callbacks import NoPackCallbacks, Poll, TrainResult
from trainer.checkpoint import CheckpointError, latest_checkpoint
from trainer.loop import train, train_pack


def specs(make_spec, n=3, **extra):
    base = dict(checkpoint_every=20, metrics_every=10, **extra)
    lrs, radii = [0.05, 0.2, 0.4, 0.1], [1.0, None, 0.5, 2.0]
    return [make_spec(**base, seed=i, optim={"iterations": 60, "lr_hidden": lrs[i], "lr_outer": 0.1},
                      constraint={"radius": radii[i]}) for i in range(n)]


def tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    return latest_checkpoint(run_dir).tensors


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for name in ta:
        assert torch.equal(ta[name], tb[name]), name


def steps_logged(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


class Recorder(NoPackCallbacks):
    def __init__(self, stop=(), drop=(), after_step=0):
        self.starts, self.ended, self.step = None, {}, 0
        self.stop, self.drop, self.after_step = frozenset(stop), frozenset(drop), after_step
        self.checkpoints: dict[int, list[int]] = {}

    def on_start(self, total_steps, start_steps):
        self.starts = list(start_steps)

    def on_metrics(self, step, metrics):
        self.step = step

    def on_checkpoints(self, step, saved):
        for config in saved:
            self.checkpoints.setdefault(config, []).append(step)

    def poll(self):
        return Poll(self.stop, self.drop) if self.step >= self.after_step else Poll()

    def on_end(self, config, outcome):
        self.ended[config] = outcome


def test_pack_checkpoints_are_a_lone_jobs_and_resume_alone_or_in_a_pack(tmp_path, make_spec, one_thread):
    configs = specs(make_spec)
    dirs = [tmp_path / f"pack{i}" for i in range(3)]
    stopped = Recorder(stop={0, 1, 2}, after_step=20)
    outcomes = train_pack(configs, dirs, stopped)
    assert [(o.status, o.step) for o in outcomes] == [("stopped", 20)] * 3
    assert stopped.checkpoints == {i: [20] for i in range(3)}

    assert train(configs[0], dirs[0]).status == "completed"  # one resumes alone...
    assert [o.status for o in train_pack(configs[1:], dirs[1:])] == ["completed"] * 2  # ...two in a pack
    for i, spec in enumerate(configs):
        train(spec, tmp_path / f"alone{i}")
        assert_same_tensors(dirs[i], tmp_path / f"alone{i}")
        assert steps_logged(dirs[i]) == list(range(0, 61, 10))


def test_configs_resumed_from_different_steps_train_in_groups(tmp_path, make_spec, one_thread):
    configs = specs(make_spec)
    dirs = [tmp_path / f"pack{i}" for i in range(3)]
    train(configs[0], dirs[0], callbacks=StopAfter(20))
    train(configs[1], dirs[1], callbacks=StopAfter(40))
    recorder = Recorder()
    outcomes = train_pack(configs, dirs, recorder)
    assert recorder.starts == [20, 40, 0]
    assert [o.status for o in outcomes] == ["completed"] * 3
    assert recorder.checkpoints == {0: [40, 60], 1: [60], 2: [20, 40, 60]}
    for i, spec in enumerate(configs):
        train(spec, tmp_path / f"alone{i}")
        assert_same_tensors(dirs[i], tmp_path / f"alone{i}")
        assert steps_logged(dirs[i]) == list(range(0, 61, 10))


def test_stopped_and_dropped_configs_leave_and_the_rest_go_on_unchanged(tmp_path, make_spec, one_thread):
    configs = specs(make_spec, n=4)
    dirs = [tmp_path / f"pack{i}" for i in range(4)]
    recorder = Recorder(stop={1}, drop={2}, after_step=30)
    outcomes = train_pack(configs, dirs, recorder)
    assert (outcomes[1].status, outcomes[1].step) == ("stopped", 30)
    assert latest_checkpoint(dirs[1]).step == 30 and steps_logged(dirs[1]) == [0, 10, 20, 30]
    assert outcomes[2] is None and 2 not in recorder.ended  # dropped: no outcome, nothing more written
    assert latest_checkpoint(dirs[2]).step == 20
    for i in (0, 3):
        assert outcomes[i].status == "completed" and recorder.ended[i] is outcomes[i]
        train(configs[i], tmp_path / f"alone{i}")
        assert_same_tensors(dirs[i], tmp_path / f"alone{i}")


def test_a_config_whose_checkpoints_do_not_verify_fails_alone(tmp_path, make_spec, one_thread):
    configs = specs(make_spec)
    dirs = [tmp_path / f"pack{i}" for i in range(3)]
    train(configs[1], dirs[1], callbacks=StopAfter(20))
    weights = latest_checkpoint(dirs[1]).path
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    outcomes = train_pack(configs, dirs)
    assert isinstance(outcomes[1], CheckpointError) and "sha256" in str(outcomes[1])
    assert [isinstance(outcomes[i], TrainResult) and outcomes[i].status for i in (0, 2)] == ["completed"] * 2


def test_a_pack_refuses_configs_that_cannot_share_a_program(make_spec):
    with pytest.raises(ValueError, match="pack_key"):
        train_pack([make_spec(), make_spec(model={"width": 18})], None)
