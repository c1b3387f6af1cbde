"""narrownet's trainer: the paper's regular and constrained regimes as a library (no HTTP, no SQL, no queue).

Public interface (used by the CLI and the Celery worker):

    from trainer.spec import JobSpec
    from trainer.loop import train, TrainResult, Callbacks, TrainingDiverged
    from trainer.data import load_data, Dataset, DataError
    from trainer.checkpoint import load_checkpoint, CheckpointError

    result = train(spec, out_dir, callbacks=cb, data_dir=None, dataset_path=None)
      - writes out_dir/ckpt-<step>.safetensors + ckpt-<step>.json (the latest two) and metrics.jsonl
      - resumes from out_dir's checkpoint when one is there (sha256 verified)
      - cb.on_start(total_steps, start_step), cb.on_metrics(step, {name: float}),
        cb.on_checkpoint(step, path, meta), cb.should_stop() -> bool  (subclass trainer.loop.Callbacks)
      - result.status in {"completed", "stopped"}; result.step; result.final_metrics (dict)
      - raises TrainingDiverged (non-finite loss), DataError (bad data), CheckpointError (corrupt checkpoint)

Layout: spec.py (the job spec), shallow/ (net.py + learner.py) (the 1-hidden-layer net as pure functions over
config-batched tensors, hand-written gradients), deep/ (MLP and ResNet-18 with a mirrored, paired, projected last
block, trained with autograd), init.py, projection.py, optim.py, schedule.py, losses.py, metrics.py, loop.py (one
training loop for both, and for a pack of configs trained as one vectorized program: train_pack), callbacks.py,
grid.py (sweep files: a grid of dotted paths over a base spec), packing.py (which configs share a program),
sweep.py (a sweep trained here, pack by pack), checkpoint.py, predict.py, data/, cli.py.
Torch-free, for the service to import: spec.py, steps.py (step budget), fit.py (model vs data checks),
checkpoint_format.py, fingerprint.py (spec_hash), plan/ (counts, width vs 2n/d, advice: POST /v1/plan).
"""
