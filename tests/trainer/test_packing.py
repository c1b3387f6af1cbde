"""Which configs share one vectorized program, and how packs are planned."""

from trainer.packing import max_pack_size, pack_key, plan_packs, why_apart
from trainer.spec import JobSpec


def spec(**changes):
    body = {"name": "a", "regime": "constrained", "model": {"arch": "shallow", "width": 20},
            "data": {"source": "synthetic", "n": 40, "d": 4},
            "optim": {"name": "gd", "lr_hidden": 0.1, "lr_outer": 0.1, "iterations": 10},
            "constraint": {"radius": 1.0}, "seed": 0}
    for key, value in changes.items():
        body[key] = {**body[key], **value} if isinstance(value, dict) and isinstance(body.get(key), dict) else value
    return JobSpec.model_validate(body)


def test_configs_differing_only_in_what_the_engine_batches_share_a_key():
    same = [spec(), spec(name="b", seed=7), spec(optim={"lr_hidden": 0.5, "lr_outer": 0.01}),
            spec(constraint={"radius": None}), spec(optim={"lr": 0.3, "lr_hidden": None, "lr_outer": None})]
    assert len({pack_key(s) for s in same}) == 1


def test_anything_else_separates_packs():
    others = [spec(model={"width": 22}), spec(regime="regular"), spec(model={"activation": "relu"}),
              spec(optim={"iterations": 11}), spec(optim={"name": "sgd"}), spec(metrics_every=5),
              spec(data={"seed": 1}), spec(constraint={"zeta": 0.1}), spec(device="cpu")]
    keys = {pack_key(s) for s in [spec(), *others]}
    assert len(keys) == len(others) + 1


def test_deep_nets_train_alone():
    mlp = JobSpec.model_validate({"regime": "regular", "model": {"arch": "mlp", "hidden": [8]},
                                  "data": {"source": "digits"}, "loss": "cross_entropy",
                                  "optim": {"lr": 0.1, "iterations": 5}})
    assert pack_key(mlp) is None and max_pack_size(mlp, 100, 64) == 1
    assert plan_packs([spec(), mlp, spec(seed=2), mlp]) == [[0, 2], [1], [3]]


def test_packs_are_split_by_memory_not_by_a_fixed_count():
    specs = [spec(seed=i) for i in range(10)]
    assert plan_packs(specs) == [list(range(10))]
    per_config_huge = lambda s: (1 << 24, 1 << 24)  # noqa: E731  # state too big for more than one per pack
    assert plan_packs(specs, per_config_huge) == [[i] for i in range(10)]
    assert max_pack_size(spec(), 1000, 20) > max_pack_size(spec(model={"width": 2000}), 1000, 20) >= 1


def test_why_apart_names_the_fields_that_differ_deep_nets_and_the_memory_bound():
    mlp = JobSpec.model_validate({"regime": "regular", "model": {"arch": "mlp", "hidden": [8]},
                                  "data": {"source": "digits"}, "loss": "cross_entropy",
                                  "optim": {"lr": 0.1, "iterations": 5}})
    specs = [spec(), spec(seed=3), spec(regime="regular", model={"width": 22}), mlp, spec(optim={"iterations": 11})]
    packs = plan_packs(specs)
    assert packs == [[0, 1], [2], [3], [4]]
    assert why_apart(specs, packs) == [
        None,
        "differs from pack 0 in model.width, regime: within a pack only lr_hidden, lr_outer, radius and seed may "
        "differ",
        "mlp configs train one at a time: only shallow nets are vectorized",
        "differs from pack 0 in optim.iterations: within a pack only lr_hidden, lr_outer, radius and seed may differ"]
    huge = lambda s: (1 << 24, 1 << 24)  # noqa: E731
    split = plan_packs(specs[:2], huge)
    assert why_apart(specs[:2], split, huge)[1].startswith("split from pack 0: at most 1 configs like these")
