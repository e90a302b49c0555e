"""The model zoo: importing the package registers every model."""
from models import lstm, mlp, transformer  # noqa: F401  (registration side effects)
from models.base import ZooModel
from models.registry import available_models, build_model, flavors_of, task_of

__all__ = ["ZooModel", "build_model", "available_models", "flavors_of", "task_of"]
