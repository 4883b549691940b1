"""Registry entries own their keys: register refuses clashing and unread keys; a model's size and cost
come from the entry (not from transformer key names); the optimizer owns its warm-up schedule."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gsweep.models import MODELS, Model, build_model, get_model
from gsweep.models import register as register_model
from gsweep.params import Param, at_least, in_unit_closed_open, positive
from gsweep.schema import TRAIN_SCHEMA
from gsweep.spec import SpecError, from_dict
from gsweep.tasks import TASKS
from gsweep.train.losses import LOSSES
from gsweep.train.optimizers import OPTIMIZERS, Optimizer
from gsweep.train.optimizers import register as register_optimizer
from gsweep.train.units import run_cost
from tests.conftest import tiny_spec_dict


class _Wide(nn.Module):
    vocab_size: int
    n_classes: int
    width: int

    @nn.compact
    def __call__(self, x_BxT, temp):
        e = self.param("embed", nn.initializers.normal(1.0), (self.vocab_size, self.width))
        return nn.Dense(self.n_classes)(e[x_BxT].sum(1)) / temp


class Wide(Model):
    """A model without d_model / d_mlp / depth."""

    name = "wide_test"
    params = {"width": Param(int, 8, check=at_least(1)),
              "temp": Param(float, 1.0, dynamic=True, check=positive, new=True)}

    @classmethod
    def module(cls, cfg, vocab_size, n_classes, seq_len, num):
        return _Wide(vocab_size, n_classes, cfg["width"])


@pytest.fixture
def wide():
    register_model(Wide)
    yield Wide
    MODELS.pop(Wide.name, None)


def _wide_spec(**model) -> dict:
    d = tiny_spec_dict()
    d["model"] = {"name": "wide_test", **model}
    return d


def _settings(width: int) -> dict:
    spec = from_dict(_wide_spec(width=width))
    return dict(spec.runs()[0].settings)


def test_model_without_transformer_keys_is_sized_by_its_entry(wide):
    from gsweep.spec.guards import param_estimate

    s = _settings(16)
    data = TASKS["modular"].build({k[5:]: v for k, v in s.items() if k.startswith("task.")})
    model = build_model({"name": "wide_test", "width": 16}, data.vocab_size, data.n_classes, data.seq_len, "highest")
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(data.x_NxT[:1]), temp=1.0)["params"]
    actual = sum(x.size for x in jax.tree.leaves(params))
    est = param_estimate(s)
    # the estimate reads the task's vocabulary for its classes: an upper bound, same order
    assert actual <= est <= 2 * actual
    # the cost of a run follows its own size: a wider model costs more
    runs = from_dict(_wide_spec(width=[8, 512])).runs()
    costs = {r.settings["model.width"]: run_cost(r) for r in runs}
    assert costs[512] > 10 * costs[8]


def test_size_guard_refuses_a_huge_model_without_d_model(wide):
    with pytest.raises(SpecError, match="model.name=wide_test.*model.width=2000000000"):
        from_dict(_wide_spec(width=2_000_000_000), allow_large=True)


def test_transformer_and_mlp_counts_are_exact():
    for name, cfg in (("transformer", {"depth": 2, "d_model": 32, "heads": 4, "d_mlp": 48, "layernorm": True}),
                      ("transformer", {"attention": "none"}), ("mlp", {"depth": 3, "d_model": 8, "d_mlp": 24})):
        entry = get_model(name)
        full = {k: p.default for k, p in entry.params.items()} | cfg
        counted = entry.param_count(full, 17, 13, 5)
        assert counted == Model.param_count.__func__(entry, full, 17, 13, 5), (name, cfg)  # jax.eval_shape


def test_model_per_run_key_must_be_read_and_not_common():
    class Unread(Wide):
        name = "unread_test"
        params = {**Wide.params, "gain": Param(float, 1.0, dynamic=True)}

    class Common(Wide):
        name = "common_test"
        params = {**Wide.params, "output_scale": Param(float, 2.0, dynamic=True)}

    with pytest.raises(ValueError, match="model.gain"):
        register_model(Unread)
    with pytest.raises(ValueError, match="model.output_scale"):
        register_model(Common)
    assert "unread_test" not in MODELS and "common_test" not in MODELS


def test_optimizer_key_clash_is_refused_at_register():
    """An entry declaring momentum with another default would run with sgd's 0.9: refused."""
    mine = Param(float, 0.99, dynamic=True, check=in_unit_closed_open, new=True)
    clash = Optimizer("heavy_test", lambda learning_rate, momentum: optax.sgd(learning_rate, momentum),
                      {"momentum": "momentum"}, params={"momentum": mine})
    with pytest.raises(ValueError, match=r"train\.momentum.*optimizer sgd"):
        register_optimizer(clash)
    schema_clash = Optimizer("lr_test", lambda learning_rate, b1: optax.sgd(learning_rate, b1),
                             {"b1": "b1"}, params={"b1": Param(float, 0.5, dynamic=True)})
    with pytest.raises(ValueError, match=r"train\.b1.*the schema"):
        register_optimizer(schema_clash)
    unread = Optimizer("unread_test", lambda learning_rate: optax.sgd(learning_rate), {},
                       params={"unused_knob": Param(float, 0.5, dynamic=True, new=True)})
    with pytest.raises(ValueError, match=r"train\.unused_knob"):
        register_optimizer(unread)
    for name in ("heavy_test", "lr_test", "unread_test"):
        assert name not in OPTIMIZERS
    assert TRAIN_SCHEMA["momentum"].default == 0.9 and "unused_knob" not in TRAIN_SCHEMA


def test_optimizer_registered_later_joins_the_schema():
    from gsweep.registry import TRAIN_KEYS

    opt = Optimizer("later_test", lambda learning_rate, decay: optax.rmsprop(learning_rate, decay=decay),
                    {"decay": "later_decay"}, params={"later_decay": Param(float, 0.9, dynamic=True, new=True)})
    try:
        register_optimizer(opt)
        assert TRAIN_SCHEMA["later_decay"] is opt.params["later_decay"]
        spec = from_dict(tiny_spec_dict(train={"optimizer": "later_test", "later_decay": [0.5, 0.8]}))
        assert sorted(r.settings["train.later_decay"] for r in spec.runs()) == [0.5, 0.8]
    finally:
        OPTIMIZERS.pop("later_test", None)
        TRAIN_KEYS.pop("later_decay", None)
        TRAIN_KEYS.owners.pop("later_decay", None)


def test_one_registry_helper():
    from gsweep.registry import Registry

    for reg in (MODELS, TASKS, OPTIMIZERS, LOSSES):
        assert isinstance(reg, Registry)
    with pytest.raises(KeyError, match="valid models: mlp, transformer"):
        MODELS.lookup("nope")
    with pytest.raises(SpecError, match="train.loss"):
        from_dict(tiny_spec_dict(train={"loss": "mse"}))


def test_warmup_is_the_optimizers_schedule():
    """The learning rate in the optimizer state follows lr * min(1, (count + 1) / warmup); the state
    has v0.1's structure (no schedule state of its own)."""
    from gsweep.train.optimizers import WARMUP, linear_warmup

    values = {"lr": jnp.float32(0.1), "warmup": jnp.int32(4), "b1": jnp.float32(0.9), "b2": jnp.float32(0.98),
              "weight_decay": jnp.float32(0.0), "eps": jnp.float32(1e-8)}
    tx = OPTIMIZERS["adamw"].transform(values)
    p = {"w": jnp.ones(3)}
    st = tx.init(p)
    v01 = optax.inject_hyperparams(optax.adamw)(learning_rate=0.1, b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.0)
    assert jax.tree.structure(st) == jax.tree.structure(v01.init(p))
    seen = []
    for _ in range(6):
        _, st2 = tx.update({"w": jnp.ones(3)}, st, p)
        seen.append(float(st2.hyperparams["learning_rate"]))
        st = st2
    np.testing.assert_allclose(seen, [0.1 * min(1, (k + 1) / 4) for k in range(6)], rtol=1e-6)
    assert WARMUP.keys == ("lr", "warmup")
    # no warm-up: the learning rate itself, bitwise
    assert float(linear_warmup(jnp.float32(0.1), jnp.int32(0))(jnp.int32(7))) == float(jnp.float32(0.1))
