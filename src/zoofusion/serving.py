"""A generated feature extractor as an MLflow pyfunc model, logged "from code" (this file is the model).

`mlflow.pyfunc.load_model("models:/zoofusion-generated@champion").predict(images)` takes uint8 images
[N, 32, 32, 3] (HWC, as CIFAR stores them) and returns the 400-d conv features [N, 400] that the study's
protocol clusters. The weights travel as the model's artifact `weights` (a dict of the four conv tensors).
"""

from __future__ import annotations

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel


class FeatureExtractor(PythonModel):
    def load_context(self, context) -> None:
        from zoofusion.core.cnn import CONV_KEYS, ConvFeatures

        w = torch.load(context.artifacts["weights"], weights_only=True)
        self.model = ConvFeatures(*(w[k] for k in CONV_KEYS)).eval()

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        from zoofusion.core.cnn import preprocess

        with torch.no_grad():
            return self.model(preprocess(np.asarray(model_input, dtype=np.uint8))).numpy()


mlflow.models.set_model(FeatureExtractor())
