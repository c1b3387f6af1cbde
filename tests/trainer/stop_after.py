"""A trainer callback that asks the loop to stop once a given step has been recorded (resume tests), keeping the
metric points it saw (the ones a killed attempt would have flushed)."""

from trainer.loop import Callbacks


class StopAfter(Callbacks):
    def __init__(self, step):
        self.stop_at, self.step, self.points = step, 0, []

    def on_metrics(self, step, metrics):
        self.points.append((step, metrics))
        self.step = step

    def should_stop(self):
        return self.step >= self.stop_at
