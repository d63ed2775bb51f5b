"""Networks: the ScaleNAS supernet, standalone subnets, checkpoint loading."""
from .checkpoint import CheckpointError, load_into, load_state_dict_file
from .export import (ModelFileError, StandaloneNet, export_subnet, load_model, save_model,
                     to_torchscript)
from .supernet import SuperNet

__all__ = ["SuperNet", "StandaloneNet", "export_subnet", "to_torchscript", "save_model",
           "load_model", "load_state_dict_file", "load_into", "CheckpointError", "ModelFileError"]
