"""fogsim: federated fog simulation of memory-budgeted devices training with DynHP.

The public API (``fogsim.api``), importable from here: ``train_device``, ``run_scenario``,
``sweep_scenario``, ``load_run``, ``compare_runs``, ``plot_run``, ``plot_comparison``,
``plot_training``. They are loaded on first use, so ``import fogsim`` stays light.
"""

__version__ = "0.1.0"

_API = ("train_device", "run_scenario", "sweep_scenario", "load_run", "compare_runs", "plot_run",
        "plot_comparison", "plot_training", "Run")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from fogsim import api

        return getattr(api, name)
    raise AttributeError(f"module 'fogsim' has no attribute {name!r}")
