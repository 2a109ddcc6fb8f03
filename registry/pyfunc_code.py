"""The python model MLflow loads from code (see registry/pyfunc.py): the saved folder is the
artifact `model_dir`, read with TrainedModel.load (JSON and safetensors, no pickle)."""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from model.learn.saved import TrainedModel
from registry.pyfunc import predict_frame


class PosecoachModel(PythonModel):
    """Scores pose sessions or repetitions with model/'s one scoring path."""

    def load_context(self, context: PythonModelContext) -> None:
        self.trained = TrainedModel.load(context.artifacts["model_dir"])

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame,
                params: dict | None = None) -> pd.DataFrame:
        return predict_frame(self.trained, model_input)


mlflow.models.set_model(PosecoachModel())
