"""The DynHP core: one model, one device, one memory budget. Plain PyTorch; no Flower, no Ray."""

from fogsim.core.config import METHODS, TrainConfig, make_train_config
from fogsim.core.importance import Magnitude, StructuredL2, make_criterion
from fogsim.core.masks import MaskSet
from fogsim.core.memory import Footprint, MemoryAccountant, pack
from fogsim.core.schedule import Schedule
from fogsim.core.topology import Topology, compact
from fogsim.core.trainer import DeviceTrainer, Plan, batch_size_for, evaluate, plan, scaled_lr

__all__ = [
    "METHODS", "TrainConfig", "make_train_config", "Magnitude", "StructuredL2", "make_criterion", "MaskSet",
    "Footprint", "MemoryAccountant", "pack", "Schedule", "Topology", "compact", "DeviceTrainer", "Plan",
    "batch_size_for", "evaluate", "plan", "scaled_lr",
]
