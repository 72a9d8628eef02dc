"""The names of the datasets and models fogsim knows, without loading PyTorch.

``fogsim.data`` and ``fogsim.models`` implement them; the command line lists them as choices and
the scenario schema checks them, both before anything heavy is imported.
"""

DATASETS: tuple[str, ...] = ("digits", "fashion-mnist", "mnist", "cifar10", "synthetic")
MODELS: tuple[str, ...] = ("mlp", "lenet5", "mlp-small")
