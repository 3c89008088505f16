"""The MLflow "model from code" of every registered emoray model (see ``infra/registry.py``).

MLflow copies this file next to the model's artifacts and runs it when the model is loaded,
instead of unpickling a Python object: loading a model cannot execute pickled code.
"""

import mlflow

from infra.registry import CheckpointModel

mlflow.models.set_model(CheckpointModel())
