"""The DynHP core: one model, one device, one memory budget. Plain PyTorch; no Flower, no Ray.

The names below are imported on first use, so that ``fogsim.core.config`` (the settings, which
the command line reads to build its options) can be imported without loading PyTorch.
"""

from importlib import import_module

_WHERE = {
    "METHODS": "config", "TrainConfig": "config", "make_train_config": "config",
    "Magnitude": "importance", "StructuredL2": "importance", "make_criterion": "importance",
    "MaskSet": "masks", "Footprint": "memory", "MemoryAccountant": "memory", "pack": "memory",
    "Schedule": "schedule", "Topology": "topology", "compact": "topology",
    "DeviceTrainer": "trainer", "Plan": "trainer", "batch_size_for": "trainer", "evaluate": "trainer",
    "plan": "trainer", "scaled_lr": "trainer",
}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'fogsim.core' has no attribute {name!r}")
    return getattr(import_module(f"fogsim.core.{_WHERE[name]}"), name)
