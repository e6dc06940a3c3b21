"""Config loading, overrides, validation and the stable run id."""
import pytest

from proxyfda_cl.config import from_dict, load_yaml, make_config, parse_scalar, to_dict
from proxyfda_cl.core.errors import ConfigError


def test_defaults_and_overrides():
    cfg = make_config({"train": {"lr": 0.1}}, ["strategy.lam=2.5", "train.epochs=3"],
                      strategy="fda", seed=4)
    assert cfg.train.lr == 0.1 and cfg.train.epochs == 3 and cfg.seed == 4
    assert cfg.strategy.name == "fda" and cfg.strategy.params["lam"] == 2.5
    assert cfg.strategy.params["k"] == 8  # completed with the strategy's defaults
    assert to_dict(cfg)["strategy"] == {"name": "fda", **cfg.strategy.params}


def test_spelled_out_defaults_give_the_same_id():
    implicit = make_config(strategy="fda")
    explicit = make_config(strategy="fda", sets=["strategy.k=8", "strategy.lam=3.0"])
    changed = make_config(strategy="fda", sets=["strategy.k=16"])
    assert implicit.id == explicit.id != changed.id


def test_options_added_later_keep_earlier_ids_at_their_neutral_value():
    """A record written before ``memory_size``/``memory_warmup``/``benchmark.imbalance`` existed
    has none of them in its config; a sweep must still find it under the same id."""
    base = make_config(strategy="proxy_fda")
    earlier = to_dict(base)
    for key in ("memory_size", "memory_warmup"):
        del earlier["strategy"][key]
    del earlier["benchmark"]["imbalance"]
    assert from_dict(earlier).id == base.id
    assert make_config(strategy="proxy_fda", sets=["strategy.memory_size=0",
                                                   "benchmark.imbalance=1"]).id == base.id
    assert make_config(strategy="proxy_fda", sets=["strategy.memory_size=256"]).id != base.id
    assert make_config(strategy="proxy_fda", sets=["benchmark.imbalance=10"]).id != base.id


def test_hyperparameters_name_what_differs_from_the_defaults():
    from proxyfda_cl.strategies import hyperparameters, strategy_defaults

    cfg = make_config(strategy="fda", sets=["strategy.k=16", "strategy.lam=3.0"])
    hp = hyperparameters(cfg.strategy.name, cfg.strategy.params)
    assert hp["strategy"] == "fda" and hp["non_default"] == ["k"]
    assert hp["values"] == {**strategy_defaults("fda"), "k": 16}
    assert hyperparameters("naive", {}) == {"strategy": "naive", "values": {}, "non_default": [],
                                            "revision": 1}
    assert hyperparameters("proxy_fda", {})["revision"] == 2


def test_numbers_written_as_text_are_numbers():
    cfg = make_config({"train": {"lr": "1e-3"}, "strategy": {"name": "fda", "lam": "1e-1"}})
    assert cfg.train.lr == 0.001 and cfg.strategy.params["lam"] == 0.1


def test_id_is_stable_and_ignores_out():
    a = make_config(out="x", seed=1)
    b = make_config(out="y", seed=1)
    c = make_config(out="x", seed=2)
    assert a.id == b.id != c.id
    assert from_dict(to_dict(a)).id == a.id


@pytest.mark.parametrize("sets, field", [
    (["train.lr=abc"], "train.lr"),
    (["train.lr=-1"], "train.lr"),
    (["train.epochs=1.5"], "train.epochs"),
    (["train.optimizer=rmsprop"], "train.optimizer"),
    (["train.nope=1"], "train.nope"),
    (["seed=-3"], "seed"),
    (["benchmark.val_fraction=1.5"], "benchmark.val_fraction"),
    (["benchmark.imbalance=0.5"], "benchmark.imbalance"),
    (["eval.distances=maybe"], "eval.distances"),
])
def test_bad_values_name_the_field(sets, field):
    with pytest.raises(ConfigError) as e:
        make_config(sets=sets)
    msg = str(e.value)
    assert msg.startswith(field) and "\n" not in msg


def test_parse_scalar():
    assert parse_scalar("3") == 3 and parse_scalar("1e-3") == 0.001
    assert parse_scalar("true") is True and parse_scalar("none") is None
    assert parse_scalar("[a, b]") == ["a", "b"] and parse_scalar("abc") == "abc"


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(str(bad))
    good = tmp_path / "good.yaml"
    good.write_text("strategy: {name: fda, k: 4}\nbenchmark: demo\n")
    cfg = make_config(load_yaml(str(good)))
    assert cfg.strategy.params["k"] == 4 and cfg.benchmark.name == "demo"
