import pytest
import yaml

from gsweep.spec import SpecError, from_dict, load_spec
from gsweep.spec.identity import run_id_of
from gsweep.spec.sweepfile import apply_overrides, expand_values
from tests.conftest import tiny_spec_dict


def test_grid_expansion_and_helpers():
    d = tiny_spec_dict(task={"data_frac": [0.3, 0.6]}, train={"weight_decay": [0, {"logspace": [-2, 0, 3]}]},
                       seeds=3)
    spec = from_dict(d, "x.yaml")
    assert spec.train["weight_decay"] == (0.0, 0.01, 0.1, 1.0)
    runs = spec.runs()
    assert len(runs) == 2 * 4 * 3
    assert set(spec.swept_keys) == {"task.data_frac", "train.weight_decay", "seed"}
    assert len({r.run_id for r in runs}) == len(runs)
    # dynamic keys do not split groups
    assert len({r.group_id for r in runs}) == 1
    # data_seed follows the seed unless given
    assert all(r["task.data_seed"] == r.seed for r in runs)


def test_static_keys_make_groups():
    spec = from_dict(tiny_spec_dict(model={"depth": [1, 2]}))
    assert len({r.group_id for r in spec.runs()}) == 2


def test_helpers():
    assert expand_values({"range": 3}, "w") == [0, 1, 2]
    assert expand_values({"range": [2, 8, 3]}, "w") == [2, 5]
    assert expand_values({"linspace": [0, 1, 3]}, "w") == [0.0, 0.5, 1.0]
    with pytest.raises(SpecError, match="unknown helper 'logspac'.*logspace"):
        expand_values({"logspac": [0, 1, 2]}, "w")


def test_run_id_is_position_independent():
    a = from_dict(tiny_spec_dict(train={"lr": [0.001, 0.003]})).runs()
    b = from_dict(tiny_spec_dict(train={"lr": [0.003]})).runs()
    assert b[0].run_id in {r.run_id for r in a}
    # engine-only knobs do not change the id
    c = from_dict(tiny_spec_dict(train={"lr": [0.003], "runs_per_chunk": 7})).runs()
    assert c[0].run_id == b[0].run_id
    assert run_id_of(dict(b[0].settings)) == b[0].run_id


def test_set_overrides(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(tiny_spec_dict()))
    spec = load_spec(f, ["train.steps=40", "model.depth=[1,2]", "seeds=2"])
    assert spec.train["steps"] == 40 and spec.model["depth"] == (1, 2) and spec.seeds == (0, 1)
    with pytest.raises(SpecError, match="train.setps.*did you mean 'steps'"):
        load_spec(f, ["train.setps=3"])
    with pytest.raises(SpecError, match="KEY=VALUE"):
        apply_overrides({}, ["train.steps"], "s.yaml")


BAD = [
    ({"bogus_key_xyz": 1}, "bogus_key_xyz"),
    ({"task": {"name": "modular", "p": 12, "op": "div"}}, r"task.p: 12 is not prime"),
    ({"task": {"data_frac": 1.5}}, r"task.data_frac: must lie in \(0, 1\]"),
    ({"task": {"data_frac": 0.0}}, r"task.data_frac"),
    ({"train": {"weight_decay": -0.1}}, r"train.weight_decay: must be >= 0"),
    ({"model": {"depth": 0}}, r"model.depth: must be >= 1"),
    ({"model": {"heads": 3}}, r"model.heads: 3 heads do not divide model.d_model = 16"),
    ({"train": {"steps": "many"}}, r"train.steps: expected int, got str"),
    ({"train": {"lr": [0.1, "x"]}}, r"train.lr: expected float"),
    ({"task": {"name": "modulr"}}, r"unknown task 'modulr'; valid tasks: .*modular"),
    ({"model": {"name": "cnn"}}, r"unknown model 'cnn'; valid models: mlp, transformer"),
    ({"model": {"dmodel": 8}}, r"model.dmodel'.*did you mean 'd_model'"),
    ({"train": {"precision": "fp8"}}, r"train.precision: 'fp8' is not one of highest, tf32, bf16"),
    ({"seeds": 0}, r"seeds: at least 1"),
]


@pytest.mark.parametrize("over,msg", BAD)
def test_bad_specs_name_file_and_key(over, msg):
    d = tiny_spec_dict()
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    with pytest.raises(SpecError, match=msg) as e:
        from_dict(d, "bad.yaml")
    assert str(e.value).startswith("bad.yaml")


def test_malformed_yaml_gives_line_and_column(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("name: x\ntask:\n  p: [1, 2\n")
    with pytest.raises(SpecError, match=r"m.yaml: malformed YAML at line \d+, column \d+"):
        load_spec(f)


def test_spec_roundtrip_is_stable():
    spec = from_dict(tiny_spec_dict(train={"weight_decay": [0, 1]}))
    again = from_dict(yaml.safe_load(spec.to_yaml()))
    assert again.to_dict() == spec.to_dict()
    assert [r.run_id for r in again.runs()] == [r.run_id for r in spec.runs()]
