"""Issue 7: exact replay, and the attention / Fourier / neuron views."""

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from gsweep.errors import UserError
from gsweep.replay import (
    fourier_power,
    key_frequencies,
    log_steps,
    plot_attention,
    plot_fourier,
    plot_neurons,
    replay,
    saved_steps,
)
from gsweep.spec import from_dict
from gsweep.train.sweep import run_sweep
from tests.conftest import tiny_spec_dict


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("insp") / "r"
    spec = from_dict(tiny_spec_dict(name="insp", train={"steps": 80, "eval_every": 20, "weight_decay": [0.0, 1.0]}))
    run_sweep(spec, out, progress=False)
    runs = pd.read_parquet(out / "runs.parquet")
    return out, runs


def not_blank(path):
    a = np.asarray(Image.open(path).convert("L"), dtype=float)
    return a.std() > 5


def test_replay_matches_the_recorded_curve_and_saves_params(result):
    out, runs = result
    rid = runs["run_id"].iloc[0]
    res = replay(out, rid, [1, 7, 33, 80])
    assert res.compared == len(pd.read_parquet(out / "curves.parquet").query("run_id == @rid"))
    assert res.max_abs_diff == 0.0, "on CPU the replay is bitwise exact"
    assert saved_steps(out, rid) == [1, 7, 33, 80]


def test_replay_of_changed_settings_names_the_first_differing_step(result, tmp_path):
    import shutil
    out, runs = result
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    raw = yaml.safe_load((bad / "spec.yaml").read_text())
    old_ids = [r.run_id for r in from_dict(raw).runs()]
    raw["train"]["lr"] = 0.0031  # the recorded curves now belong to other settings
    (bad / "spec.yaml").write_text(yaml.safe_dump(raw))
    new_ids = [r.run_id for r in from_dict(raw).runs()]
    c = pd.read_parquet(bad / "curves.parquet")
    c["run_id"] = c["run_id"].map(dict(zip(old_ids, new_ids, strict=True)))
    c.to_parquet(bad / "curves.parquet", index=False)
    (bad / "curves.parquet.sha256").unlink(missing_ok=True)  # edited on purpose: read as unverified
    with pytest.raises(UserError, match=r"differs from the recorded curve first at step \d+"):
        replay(bad, new_ids[0], [80])


def test_unknown_run_id_is_named(result):
    out, _ = result
    with pytest.raises(UserError, match="no run 'nope'"):
        replay(out, "nope", [1])


def test_views_draw_non_blank_images(result, tmp_path):
    out, runs = result
    rid = runs["run_id"].iloc[-1]
    for fn, name in ((plot_fourier, "f.png"), (plot_neurons, "n.png")):
        p = fn(out, rid, None, str(tmp_path / name))
        assert not_blank(p), name
    p = plot_attention(out, rid, None, str(tmp_path / "a.png"))
    assert not_blank(p)


def test_fourier_helpers_find_planted_frequencies():
    p = 31
    x = np.arange(p)
    emb = np.stack([np.cos(2 * np.pi * 3 * x / p), np.sin(2 * np.pi * 3 * x / p), np.cos(2 * np.pi * 7 * x / p)], 1)
    power = fourier_power(np.concatenate([emb, np.zeros((1, 3))]), p)
    assert key_frequencies(power, share=0.6) == [3]
    assert key_frequencies(power, share=0.99) == [3, 7]
    assert log_steps(1000, 4) == [1, 10, 100, 1000]
