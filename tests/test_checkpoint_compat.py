"""A checkpoint written before a per-run key (RunState.hyper) or a state field (RunState.params0)
was added restores: the saved fields come from disk, the rest and the hyperparameters (the runs'
settings, checked by the record) from the target."""

from typing import Any

import flax
import jax.numpy as jnp
import numpy as np

from gsweep import checkpoint


@flax.struct.dataclass
class Before:
    params: Any
    hyper: Any


@flax.struct.dataclass
class After:
    params: Any
    hyper: Any
    params0: Any = ()


def test_older_checkpoint_restores(tmp_path):
    # every leaf of a run state leads with the run axis (R = 2 here), as in a real chunk
    rec = {"unit_id": "u1", "group_id": "g1", "run_ids": ["a"]}
    checkpoint.save(tmp_path / "u1", 1, Before(params={"w": jnp.arange(6.0).reshape(2, 3)}, hyper={"train.lr": jnp.ones(2)}), rec)
    target = After(params={"w": jnp.zeros((2, 3))}, hyper={"train.lr": jnp.ones(2), "train.eps": jnp.full(2, 1e-8)})
    state, _, step = checkpoint.restore(tmp_path / "u1", target, rec)
    assert step == 1 and state.params0 == ()
    np.testing.assert_array_equal(state.params["w"], np.arange(6.0).reshape(2, 3))
    assert set(state.hyper) == {"train.lr", "train.eps"}
    # the same layout restores as saved
    checkpoint.save(tmp_path / "u2", 1, target.replace(params={"w": jnp.ones((2, 3))}), rec)
    same, _, _ = checkpoint.restore(tmp_path / "u2", target, rec)
    np.testing.assert_array_equal(same.params["w"], np.ones((2, 3)))
