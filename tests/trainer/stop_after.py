"""A trainer callback that asks the loop to stop once a given step has been recorded (for resume tests)."""

from trainer.loop import Callbacks


class StopAfter(Callbacks):
    def __init__(self, step):
        self.stop_at, self.step = step, 0

    def on_metrics(self, step, metrics):
        self.step = step

    def should_stop(self):
        return self.step >= self.stop_at
