"""Where checkpoints and uploaded datasets live: a local directory or S3-compatible object storage (store.py)."""
