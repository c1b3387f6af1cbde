"""`python -m narrownet` is the `narrownet` command (used to start child processes with the same venv)."""

from narrownet.cli import app

app(prog_name="narrownet")
