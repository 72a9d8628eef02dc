"""The federated fog simulation: a fleet of memory-budgeted devices on Flower and Ray.

Data flows one way: scenario YAML (``scenario``) -> devices and profiles (``profiles``,
``fleet``) -> per-device plan (``planning``) -> data split (``partition``) -> simulation
(``client_app``, ``server_app``, ``fog``) -> result files (``outputs``, ``plots``).
"""
