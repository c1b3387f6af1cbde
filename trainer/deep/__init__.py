"""Deep nets in the paper's two regimes (appendix H): an MLP whose last hidden layer, and a ResNet-18 whose 4th
block, play the paper's hidden layer W (mirrored init, pairwise output layer, ball projection after every step).

    DeepLearner(spec, data, device)      # the learner trainer.loop.train() drives for arch "mlp" and "resnet18"
    build_model(spec, input_shape, k)    # a freshly initialized MLP / ResNet18 (nn.Module)
    model_for_tensors(spec, tensors)     # the architecture of a checkpoint's model.* tensors (for predict)
"""

from trainer.deep.learner import DeepLearner
from trainer.deep.models import build_model, model_for_tensors

__all__ = ["DeepLearner", "build_model", "model_for_tensors"]
