import pytest
import torch

from fogsim.core.config import TrainConfig, make_train_config
from fogsim.core.memory import Footprint
from fogsim.core.trainer import DeviceTrainer, batch_size_for, plan, scaled_lr
from fogsim.core.topology import Topology
from fogsim.data import load_dataset
from fogsim.errors import FogsimError
from fogsim.models import build_model


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def run(data, config, budget=None, model="mlp-small"):
    net = build_model(model, data.input_shape, data.num_classes, seed=config.seed)
    n = len(data.train_x)
    total = int(config.epochs * n)
    trainer = DeviceTrainer(net, data.input_shape, data.num_classes, config, horizon=total, budget=budget)
    rows = []
    generator = torch.Generator().manual_seed(config.seed)
    while trainer.progress < total:
        rows += trainer.train(data.train_x, data.train_y, min(n, total - trainer.progress), generator=generator)
    trainer.finish()
    return trainer, rows


def test_batch_formula():
    fp = Footprint(state_bytes=1000, activation_bytes=10)
    assert batch_size_for(fp, 1000 + 10 * 57 + 9, 8, 512) == 57
    assert batch_size_for(fp, 1000 + 10 * 3, 8, 512) == 8       # clamped up to b_min
    assert batch_size_for(fp, 10**9, 8, 512) == 512             # clamped down to b_max


def test_lr_rules():
    assert scaled_lr(0.1, "keep", 256, 64) == 0.1
    assert scaled_lr(0.1, "linear", 256, 64) == pytest.approx(0.4)
    assert scaled_lr(0.1, "sqrt", 256, 64) == pytest.approx(0.2)


@pytest.mark.parametrize("budget_fraction, batch_min", [(1.0, 64), (0.5, 16), (0.35, 8)])
def test_dynhp_never_exceeds_budget_and_reaches_target(digits, budget_fraction, batch_min):
    config = make_train_config(method="dynhp", compression=10, epochs=3, batch_min=batch_min, batch_max=400)
    dense = plan(build_model("mlp-small", digits.input_shape, 10, seed=0),
                 Topology(build_model("mlp-small", digits.input_shape, 10), digits.input_shape),
                 config.model_copy(update={"method": "dense"}), None, 10).budget_bytes
    budget = int(dense * budget_fraction)
    trainer, rows = run(digits, config, budget)
    assert max(r["memory_bytes"] for r in rows) <= budget
    assert all(r["memory_bytes"] == r["state_bytes"] + r["activation_bytes"] for r in rows)
    assert trainer.density == round(0.1 * trainer.masks.total()) / trainer.masks.total()
    sizes = [r["batch_size"] for r in rows]
    assert max(sizes) > batch_min, "the batch never grew"
    assert trainer.plan.one_shot == (budget_fraction < 1)


@pytest.mark.parametrize("prune_every, batch_max", [(0.05, 2000), (0.5, 64), (0.01, 1024)])
def test_schedule_reaches_target_whatever_the_batch_does(digits, prune_every, batch_max):
    config = make_train_config(method="dynhp", compression=20, epochs=2, prune_every=prune_every,
                               prune_end=1.0, batch_max=batch_max)
    trainer, rows = run(digits, config)
    assert trainer.density == round(0.05 * trainer.masks.total()) / trainer.masks.total()
    densities = [r["density"] for r in rows]
    assert all(a >= b for a, b in zip(densities, densities[1:]))


def test_step_progress_is_in_samples_not_steps(digits):
    config = make_train_config(method="dynhp", compression=10, epochs=2, prune_end=0.5)
    trainer, rows = run(digits, config)
    n = len(digits.train_x)
    assert rows[-1]["progress"] == 2 * n
    after_window = [r for r in rows if r["progress"] - r["batch_size"] >= n]
    before_window = [r for r in rows if r["progress"] < n // 2]
    assert after_window and all(r["density"] == trainer.density for r in after_window), \
        "target not reached by the end of the pruning window"
    assert before_window[-1]["density"] > trainer.density


def test_hard_pruned_weights_stay_zero_and_soft_may_regrow(digits):
    for method in ("gmp", "dynhp"):
        trainer, _ = run(digits, make_train_config(method=method, epochs=2))
        for name, mask in trainer.masks.masks.items():
            assert (trainer.masks.params[name][~mask] == 0).all()
    trainer, rows = run(digits, make_train_config(method="soft", epochs=2, prune_every=0.5))
    assert trainer.plan.layout == "dense"
    assert len({r["state_bytes"] for r in rows}) == 1, "soft keeps every weight, so its state never shrinks"


def test_fixed_batch_methods_keep_their_batch(digits):
    for method in ("dense", "gmp", "soft"):
        _, rows = run(digits, make_train_config(method=method, epochs=1, batch_size=32))
        assert {r["batch_size"] for r in rows[:-1]} == {32}


def test_infeasible_budget_names_the_bytes_needed(digits):
    config = make_train_config(method="dynhp", compression=10)
    with pytest.raises(FogsimError, match=r"sensor-3 cannot train dynhp: budget .* \(5000 B\) is below the .* "
                                          r"\(\d+ B\) needed for compression 10x at batch 64"):
        net = build_model("mlp-small", digits.input_shape, 10)
        plan(net, Topology(net, digits.input_shape), config, 5000, 10, device="sensor-3")


def test_dense_cannot_prune_to_fit(digits):
    net = build_model("mlp-small", digits.input_shape, 10)
    need = plan(net, Topology(net, digits.input_shape), TrainConfig(method="dense"), None, 10).budget_bytes
    with pytest.raises(FogsimError, match="needed for the dense model"):
        plan(net, Topology(net, digits.input_shape), TrainConfig(method="dense"), need - 1, 10)


def test_structured_dynhp_shrinks_activations_too(digits):
    config = make_train_config(method="dynhp", compression=4, epochs=2, granularity="structured")
    trainer, rows = run(digits, config)
    assert trainer.plan.layout == "compact"
    assert rows[-1]["activation_bytes"] / rows[-1]["batch_size"] < rows[0]["activation_bytes"] / rows[0]["batch_size"]
    assert max(r["memory_bytes"] for r in rows) <= trainer.budget
    assert trainer.density <= 0.25


def test_same_seed_same_numbers(digits):
    config = make_train_config(method="dynhp", epochs=1, seed=7)
    _, a = run(digits, config)
    _, b = run(digits, config)
    assert a == b
    _, c = run(digits, config.model_copy(update={"seed": 8}))
    assert [r["loss"] for r in a] != [r["loss"] for r in c]


def test_config_errors_name_the_key():
    with pytest.raises(FogsimError, match="^compression: Input should be greater than or equal to 1"):
        make_train_config(compression=0.5)
    with pytest.raises(FogsimError, match="^method: .*got 'pruney'"):
        make_train_config(method="pruney")
    with pytest.raises(FogsimError, match="prune_end"):
        make_train_config(prune_start=0.8, prune_end=0.2)
    with pytest.raises(FogsimError, match="batch_max"):
        make_train_config(batch_min=128, batch_max=64)


def test_devices_started_from_one_origin_share_their_first_pruning_step(digits, monkeypatch):
    """A worker starts many devices on one trainer; those started from the same weights and masks
    (the same ``origin``) propose the same masks before their first step, computed once; the
    proposal is what each would have computed, and ``forget`` drops it."""
    model = build_model("mlp-small", digits.input_shape, digits.num_classes, seed=0)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    config = make_train_config(method="dynhp", compression=4, epochs=1, prune_every=0.5)
    trainer = DeviceTrainer(model, digits.input_shape, digits.num_classes, config, horizon=4 * 64)
    calls = []
    propose = trainer.criterion.propose
    monkeypatch.setattr(trainer.criterion, "propose", lambda masks, density: calls.append(density) or
                        propose(masks, density))
    x, y = digits.train_x[:64], digits.train_y[:64]
    results = []
    for device in range(3):
        if device == 2:
            trainer.forget()
        model.load_state_dict(initial)
        trainer.start(4 * 64, progress=64, origin="round-2-model")
        trainer.train(x, y, 64, generator=torch.Generator().manual_seed(device))
        results.append({k: v.clone() for k, v in trainer.masks.state_dict().items()})
    first = [d for d in calls if d == calls[0]]
    assert len(first) == 2, "the first device and the one after forget() proposed; the second shared"
    fresh = DeviceTrainer(build_model("mlp-small", digits.input_shape, digits.num_classes, seed=0),
                          digits.input_shape, digits.num_classes, config, horizon=4 * 64)
    fresh.start(4 * 64, progress=64)
    fresh.train(x, y, 64, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(results[1][k], m) for k, m in fresh.masks.state_dict().items()), \
        "the shared proposal is the one the device would have made"
