"""fogsim: federated fog simulation of memory-budgeted devices training with DynHP."""

__version__ = "0.1.0"
