"""narrownet's trainer: the paper's regular and constrained regimes as a library (no HTTP, no SQL, no queue).

Public interface (used by the CLI and the Celery worker):

    from trainer.spec import JobSpec
    from trainer.loop import train, TrainResult, Callbacks, TrainingDiverged
    from trainer.data import load_data, Dataset, DataError
    from trainer.checkpoint import load_checkpoint, CheckpointError

    result = train(spec, out_dir, callbacks=cb, data_dir=None, dataset_path=None)
      - writes out_dir/checkpoint.safetensors + out_dir/checkpoint.json (+ metrics.jsonl)
      - resumes from out_dir's checkpoint when one is there (sha256 verified)
      - cb.on_metrics(step, {name: float}), cb.on_checkpoint(step, path, meta), cb.should_stop() -> bool
      - result.status in {"completed", "stopped"}; result.step; result.final_metrics (dict)
      - raises TrainingDiverged (non-finite loss), DataError (bad data), CheckpointError (corrupt checkpoint)
"""
