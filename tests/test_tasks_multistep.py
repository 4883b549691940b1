"""Generators of the multi-step tasks: composition, modular_chain, khop, sparse_parity.

Answers are recomputed by slow, independent reference code (plain Python loops over the token
sequences), splits are checked for size and disjointness, and masks for determinism per data seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gsweep.schema import task_schema
from gsweep.spec import load_spec
from gsweep.tasks import TASKS, get_task

ROOT = Path(__file__).resolve().parents[1]
MULTISTEP = ("composition", "modular_chain", "khop", "sparse_parity")
SMALL = {
    "composition": {"n_entities": 60, "n_relations": 12, "facts_per_entity": 8, "ood_frac": 0.1,
                    "n_test": 200, "max_inferred": 3000, "n_ood": 500, "phi": 3.0},
    "modular_chain": {"p": 7, "n_hop2": 200, "n_hop3": 300, "hop2_frac": 0.5, "hop3_frac": 0.3, "data_frac": 0.6},
    "khop": {"seq_len": 12, "alphabet": 3, "hops": 3, "pool_size": 600, "data_frac": 0.5},
    "sparse_parity": {"n_bits": 10, "k": 3, "pool_size": 500, "data_frac": 0.5},
}


def cfg_of(name: str, **kw) -> dict:
    cfg = {k: p.default for k, p in task_schema(name).items()}
    cfg.update(name=name, data_seed=0)
    cfg.update(SMALL[name])
    cfg.update(kw)
    return cfg


def build(name: str, **kw):
    cfg = cfg_of(name, **kw)
    task = get_task(name)
    assert task.check(cfg) is None
    data = task.build(cfg)
    return cfg, task, data, task.masks(data, cfg)


def dynamic_keys(name: str) -> list[str]:
    return [k for k, p in task_schema(name).items() if p.dynamic]


# ---------------------------------------------------------------------------------------- shared


@pytest.mark.parametrize("name", MULTISTEP)
def test_registered_and_pool_shape(name):
    assert name in TASKS
    cfg, task, data, masks = build(name)
    assert data.split_names[0] == "train"
    assert list(masks) == list(data.split_names)
    assert data.x_NxT.dtype == np.int32 and data.y_N.dtype == np.int32
    assert data.x_NxT.min() >= 0 and data.x_NxT.max() < data.vocab_size
    assert data.y_N.min() >= 0 and data.y_N.max() < data.n_classes
    for s, m in masks.items():
        assert m.shape == (data.n,) and m.dtype == bool
        assert m.any(), s
    # no input appears twice in the pool (a held-out example is never a copy of a trained one)
    assert len(np.unique(data.x_NxT, axis=0)) == data.n


@pytest.mark.parametrize("name", MULTISTEP)
def test_masks_deterministic_per_data_seed(name):
    cfg, task, data, m0 = build(name)
    m0b = task.masks(data, dict(cfg))
    m1 = task.masks(data, {**cfg, "data_seed": 1})
    for s in data.split_names:
        np.testing.assert_array_equal(m0[s], m0b[s])
    assert not np.array_equal(m0["train"], m1["train"])


@pytest.mark.parametrize("name", MULTISTEP)
def test_pool_independent_of_dynamic_keys(name):
    cfg, task, data, _ = build(name)
    changes = {"data_seed": 5, "data_frac": 0.9}
    if name == "composition":
        changes["phi"] = 1.0
    if name == "modular_chain":
        changes.update(hop2_frac=0.1, hop3_frac=0.0)
    assert set(changes) <= set(dynamic_keys(name))
    other = task.build({**cfg, **changes})
    np.testing.assert_array_equal(data.x_NxT, other.x_NxT)
    np.testing.assert_array_equal(data.y_N, other.y_N)
    assert (data.vocab_size, data.n_classes, data.split_names) == (other.vocab_size, other.n_classes,
                                                                   other.split_names)


@pytest.mark.parametrize("name", MULTISTEP)
def test_held_out_splits_never_trained(name):
    _, _, data, masks = build(name)
    train = masks["train"]
    for s, m in masks.items():
        if s not in ("train", "atomic"):
            assert not (m & train).any(), s


# ---------------------------------------------------------------------------------------- composition


def graph_facts(data, cfg):
    """Reference: the atomic facts as a dict (h, r) -> t, read back from the pool's atomic rows."""
    E = cfg["n_entities"]
    pad = E + cfg["n_relations"]
    facts = {}
    for x, y in zip(data.x_NxT.tolist(), data.y_N.tolist(), strict=True):
        if x[0] == pad:
            assert (x[1], x[2]) not in facts
            facts[(x[1], x[2])] = y
    return facts


def test_composition_reference_and_ood():
    cfg, task, data, masks = build("composition")
    E, F = cfg["n_entities"], cfg["facts_per_entity"]
    pad = E + cfg["n_relations"]
    facts = graph_facts(data, cfg)
    A = E * F
    assert len(facts) == A == data.info["n_atomic"]
    heads = {}
    for (h, r) in facts:
        heads.setdefault(h, set()).add(r)
    assert all(len(rs) == F for rs in heads.values()) and len(heads) == E
    # OOD atomic facts, from the graph (not from the pool)
    from gsweep.tasks.composition import graph
    g = graph(cfg)
    ood = set()
    for a in np.flatnonzero(g.ood_A):
        h, j = divmod(int(a), F)
        ood.add((h, int(g.rel_ExF[h, j]) + E))
    assert len(ood) == data.info["n_atomic_ood"] == round(cfg["ood_frac"] * A)

    x, y = data.x_NxT.tolist(), data.y_N.tolist()
    n_id = n_ood = 0
    for i, (row, t) in enumerate(zip(x, y, strict=True)):
        if row[0] == pad:
            assert masks["atomic"][i] and masks["train"][i]
            continue
        h, r1, r2 = row
        assert E <= r1 < pad and E <= r2 < pad and 0 <= h < E
        b = facts[(h, r1)]
        assert facts[(b, r2)] == t  # the answer composes two atomic facts
        hop_ood = ((h, r1) in ood, (b, r2) in ood)
        if masks["test_ood"][i]:
            n_ood += 1
            assert hop_ood == (True, True)
        else:
            n_id += 1
            assert hop_ood == (False, False)
            if masks["train"][i]:
                assert not masks["test"][i]
    assert n_ood == data.info["n_inferred_ood"] > 0
    assert n_id == data.info["n_inferred_id"]
    # the number of inferred facts in the graph, by brute force
    total_id = total_ood = 0
    for (h, r1), b in facts.items():
        for r2 in heads[b]:
            o = ((h, r1) in ood, (b, r2) in ood)
            total_id += o == (False, False)
            total_ood += o == (True, True)
    assert (total_id, total_ood) == (data.info["n_inferred_id_graph"], data.info["n_inferred_ood_graph"])


@pytest.mark.parametrize("phi", [0.0, 0.5, 3.0, 5.25])
def test_composition_phi_mask_size(phi):
    cfg, task, data, masks = build("composition", phi=phi)
    A, n_ood_atomic = data.info["n_atomic"], data.info["n_atomic_ood"]
    n_inferred_train = int(masks["train"].sum()) - A
    assert n_inferred_train == round(phi * (A - n_ood_atomic))
    assert masks["test"].sum() == cfg["n_test"]
    assert masks["atomic"].sum() == A
    # the same data seed gives the same test set whatever phi, and more phi only adds facts
    _, _, _, more = build("composition", phi=phi + 1.0)
    np.testing.assert_array_equal(masks["test"], more["test"])
    assert not (masks["train"] & ~more["train"]).any()


def test_composition_data_frac_when_phi_null():
    cfg, task, data, masks = build("composition", phi=None, data_frac=0.25)
    avail = data.info["n_inferred_id"] - cfg["n_test"]
    assert masks["train"].sum() - data.info["n_atomic"] == int(0.25 * avail)


def test_composition_check_messages():
    task = get_task("composition")
    assert "task.phi" in task.check(cfg_of("composition", phi=100.0))
    assert "task.facts_per_entity" in task.check(cfg_of("composition", facts_per_entity=20, n_relations=10))
    assert "task.n_test" in task.check(cfg_of("composition", n_test=10**6))


# ---------------------------------------------------------------------------------------- modular_chain


def chain_reference(row: list[int], p: int) -> tuple[list[int], int]:
    """Operands and answer of one chain row, parsed token by token (add only)."""
    toks = [t for t in row if t != p + 2]
    assert toks[-1] == p + 1
    operands = toks[:-1:2]
    assert all(t == p for t in toks[1:-1:2])
    acc = operands[0]
    for v in operands[1:]:
        acc = (acc + v) % p
    return operands, acc


@pytest.mark.parametrize("op", ["add", "sub", "mul", "x2_y2"])
def test_chain_answers_reference(op):
    cfg, task, data, masks = build("modular_chain", op=op)
    p = cfg["p"]
    f = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
         "x2_y2": lambda a, b: a * a + b * b}[op]
    counts = {1: 0, 2: 0, 3: 0}
    for row, y in zip(data.x_NxT.tolist(), data.y_N.tolist(), strict=True):
        assert len(row) == 8
        toks = [t for t in row if t != p + 2]
        assert row[: 8 - len(toks)] == [p + 2] * (8 - len(toks))  # left-padded
        ops = toks[:-1:2]
        acc = ops[0]
        for v in ops[1:]:
            acc = f(acc, v) % p
        assert y == acc
        counts[len(ops) - 1] += 1
    assert counts == {1: p * p, 2: min(p**3, cfg["n_hop2"]), 3: min(p**4, cfg["n_hop3"])}


def test_chain_splits():
    cfg, task, data, masks = build("modular_chain")
    p = cfg["p"]
    n1 = p * p
    rows = data.x_NxT.tolist()
    train_pairs = set()
    test_pairs = set()
    for i in range(n1):
        ops, _ = chain_reference(rows[i], p)
        (train_pairs if masks["train"][i] else test_pairs).add(tuple(ops))
        assert masks["train"][i] != masks["test"][i]
    assert len(train_pairs) == int(cfg["data_frac"] * n1)

    def parts(ops):
        acc, out = ops[0], []
        for v in ops[1:]:
            out.append((acc, v))
            acc = (acc + v) % p
        return out

    n_known = {2: 0, 3: 0}
    n_trained = {2: 0, 3: 0}
    for i in range(n1, data.n):
        ops, _ = chain_reference(rows[i], p)
        hops = len(ops) - 1
        known = all(q in train_pairs for q in parts(ops))
        n_known[hops] += known
        if masks["train"][i]:
            assert known  # no held-out pair inside a trained chain
            n_trained[hops] += 1
        if hops == 2:
            assert masks["hop2"][i] == (known and not masks["train"][i])
            assert masks["hop2_novel"][i] == (not known)
            assert not masks["hop3"][i] and not masks["hop3_novel"][i] and not masks["test"][i]
        else:
            assert masks["hop3"][i] == (known and not masks["train"][i])
            assert masks["hop3_novel"][i] == (not known)
            assert not masks["hop2"][i] and not masks["hop2_novel"][i]
    for k in (2, 3):
        assert n_trained[k] == round(cfg[f"hop{k}_frac"] * n_known[k])
    # the test pairs are exactly the pairs not trained
    assert len(test_pairs) == n1 - len(train_pairs) and not (train_pairs & test_pairs)


def test_chain_zero_fracs_train_one_step_only():
    cfg, task, data, masks = build("modular_chain", hop2_frac=0.0, hop3_frac=0.0)
    n1 = cfg["p"] ** 2
    assert not masks["train"][n1:].any()
    h3 = slice(n1 + data.info["n_hop2"], data.n)
    assert (masks["hop3"][h3] | masks["hop3_novel"][h3]).all()  # every three-step chain is held out
    assert not (masks["hop3"][h3] & masks["hop3_novel"][h3]).any()


def test_held_out_parts_declared():
    from gsweep.tasks import get_task
    chain = get_task("modular_chain")
    new = chain.held_out_parts(("train", "test", "hop2", "hop2_novel", "hop3", "hop3_novel"))
    assert not new["hop2"] and not new["hop3"] and new["hop2_novel"] & new["test"] and new["hop3_novel"] & new["test"]
    old = chain.held_out_parts(("train", "test", "hop2", "hop2_novel", "hop3"))  # a dir from before hop3_novel
    assert old["hop3"] & old["test"]
    kh = get_task("khop").held_out_parts(("train", "test", "hop1", "hop2"))
    assert kh["hop2"] <= kh["test"] and not (kh["hop1"] & kh["hop2"])
    comp = get_task("composition").held_out_parts(("train", "atomic", "test", "test_ood"))
    assert not (comp["test"] & comp["test_ood"])


# ---------------------------------------------------------------------------------------- khop


def khop_reference(s: list[int], k: int) -> int | None:
    """Sanford et al.'s hop_k at the last position, straight from the definition."""
    i = len(s) - 1
    for _ in range(k):
        js = [j for j in range(1, i + 1) if s[j - 1] == s[i]]
        if not js:
            return None
        i = max(js)
    return s[i]


def test_khop_reference_and_splits():
    cfg, task, data, masks = build("khop")
    S, K = cfg["alphabet"], cfg["hops"]
    per_hop = {k: 0 for k in range(1, K + 1)}
    for i, (row, y) in enumerate(zip(data.x_NxT.tolist(), data.y_N.tolist(), strict=True)):
        s, q = row[:-1], row[-1]
        k = q - S + 1
        assert 1 <= k <= K and len(s) == cfg["seq_len"]
        ref = khop_reference(s, k)
        assert y == (S if ref is None else ref)
        per_hop[k] += 1
        for h in range(1, K + 1):
            assert masks[f"hop{h}"][i] == (h == k and not masks["train"][i])
    assert set(per_hop.values()) <= {cfg["pool_size"] // K, cfg["pool_size"] // K + 1}
    assert masks["train"].sum() == int(cfg["data_frac"] * cfg["pool_size"])
    assert (masks["test"] == ~masks["train"]).all()


def test_khop_hand_example():
    from gsweep.tasks.khop import hop_answers
    s = np.array([[0, 1, 2, 0, 2, 1, 0, 2]])
    # hop1 at 7 (symbol 2): last earlier 2 at 4 -> position 5 (1); hop2 from 5 (symbol 1): earlier 1
    # at 1 -> position 2 (2); hop3 from 2 (symbol 2): no earlier 2 -> none
    assert [int(hop_answers(s, np.array([k]), none=9)[0]) for k in (1, 2, 3)] == [1, 2, 9]


# ---------------------------------------------------------------------------------------- sparse parity


def test_sparse_parity_reference():
    cfg, task, data, masks = build("sparse_parity")
    rel = data.info["relevant"]
    assert len(rel) == cfg["k"] == len(set(rel))
    for row, y in zip(data.x_NxT.tolist(), data.y_N.tolist(), strict=True):
        assert row[-1] == 2 and set(row[:-1]) <= {0, 1}
        assert y == sum(row[i] for i in rel) % 2
    assert masks["train"].sum() == int(cfg["data_frac"] * cfg["pool_size"])
    # both classes are present in training
    assert set(data.y_N[masks["train"]].tolist()) == {0, 1}


def test_sparse_parity_enumerates_small_n():
    cfg, task, data, masks = build("sparse_parity", n_bits=6, pool_size=1000)
    assert data.n == 64


# ---------------------------------------------------------------------------------------- sweep files

SWEEPS = ["composition.yaml", "composition-quick.yaml", "chain.yaml", "chain-quick.yaml", "khop.yaml"]


@pytest.mark.parametrize("fname", SWEEPS)
def test_sweep_files_validate(fname):
    path = ROOT / "sweeps" / fname
    spec = load_spec(path)
    runs = spec.runs()
    assert runs and len(spec.seeds) >= 2
    assert path.read_text().lstrip().startswith("#")
    assert "gsweep run" in path.read_text().split("\n\n")[0]
    # the quick sweeps also validate with the shortened budgets the acceptance checks use
    if "quick" in fname:
        load_spec(path, ["train.steps=200"]).runs()


def test_resume_refuses_a_dir_recorded_with_old_chain_splits(tmp_path):
    """A chain results dir from before hop3_novel (hop3 = every held-out three-step chain) is refused on
    resume with a one-line error, not mixed; a dir recording today's splits passes."""
    from pathlib import Path

    from gsweep.errors import UserError
    from gsweep.spec import load_spec
    from gsweep.tasks.recorded import check_recorded_splits

    runs = load_spec(Path(__file__).parent.parent / "sweeps/chain-quick.yaml").runs()
    gid = runs[0].group_id
    now = ["train", "test", "hop2", "hop2_novel", "hop3", "hop3_novel"]
    check_recorded_splits(tmp_path, {"groups": {gid: {"splits": now}}}, runs)
    check_recorded_splits(tmp_path, {}, runs)  # a new dir
    with pytest.raises(UserError) as e:
        check_recorded_splits(tmp_path, {"groups": {gid: {"splits": now[:-1]}}}, runs)
    msg = str(e.value)
    assert "\n" not in msg and "hop3_novel" in msg and "new results dir" in msg
