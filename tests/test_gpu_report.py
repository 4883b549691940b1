"""scripts/gpu_report.py: the accelerator figures read against the issue's targets, from files only
(a synthetic gpu_bench.sh folder whose figures meet some targets and miss others by design)."""

import importlib.util
import json

import pandas as pd
import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("gpu_report", ROOT / "scripts" / "gpu_report.py")
gpu_report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_report)


def test_plan_seconds_reads_the_total_estimate():
    assert gpu_report.plan_seconds("group ...\ntotal: 8 runs in 1 group(s), 2,400 model-steps, estimated 3.6 s\n") == 3.6
    assert gpu_report.plan_seconds("total: 1,296 runs, estimated 1 h 57 min\n") == 3600 + 57 * 60
    assert gpu_report.plan_seconds("no total line") is None


def _runs(t_gen_by_cell_seed):
    rows = [{"task.data_frac": f, "train.weight_decay": wd, "seed": s, "t_gen": t}
            for (f, wd, s), t in t_gen_by_cell_seed.items()]
    return pd.DataFrame(rows)


def test_report_reads_every_target(tmp_path):
    (tmp_path / "bench").mkdir()
    cfg = lambda prec, R, msps, loop, vmap, comp: {  # noqa: E731
        "precision": prec, "runs": R, "model_steps_per_s": msps, "ratio_vs_torch_loop": loop,
        "ratio_vs_torch_vmap": vmap, "compile_s": comp, "eval_overhead_frac": 0.02, "achieved_tflops": 1.0,
        "peak_tflops": 100.0, "device_name": "NVIDIA H100"}
    (tmp_path / "bench" / "x.json").write_text(json.dumps({"configurations": [
        cfg("tf32", 256, 9000.0, 25.0, 4.0, 12.0), cfg("tf32", 1024, 12000.0, 33.0, 5.5, 20.0),
        cfg("highest", 256, 5000.0, 7.5, 3.0, 11.0)]}))
    (tmp_path / "card.txt").write_text("date\nhost\nname, memory.total\nNVIDIA H100, 80 GiB\njax gpu\n")
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "meta.json").write_text(json.dumps({
        "started": "2026-12-06T10:00:00+00:00", "finished": "2026-12-06T10:01:40+00:00", "backend": "gpu",
        "device_kind": "NVIDIA H100", "devices": ["cuda:0"], "run_devices": 1,
        "groups": {"g1": {"runs": 32, "runs_per_chunk": 32, "compile_s": 41.0}}}))
    (tmp_path / "plan.txt").write_text("total: 32 runs in 1 group(s), estimated 1 min 30 s\n")
    highest = {(0.3, 1.0, s): t for s, t in enumerate([1000, 1200, 1400])}
    highest.update({(0.5, 1.0, s): t for s, t in enumerate([500, 510, 520])})
    highest[(0.6, 1.0, 0)] = 300
    tf32 = {(0.3, 1.0, s): t + 50 for s, t in enumerate([1000, 1200, 1400])}  # within the cell's SD (200)
    tf32.update({(0.5, 1.0, s): t + 100 for s, t in enumerate([500, 510, 520])})  # outside its SD (10)
    tf32[(0.6, 1.0, 0)] = None  # generalises at highest only
    (tmp_path / "sweep-highest").mkdir()
    _runs(tf32).to_parquet(tmp_path / "sweep" / "runs.parquet")
    _runs(highest).to_parquet(tmp_path / "sweep-highest" / "runs.parquet")

    r = gpu_report.report(tmp_path)
    met = {row["target"].split(" >=")[0].split(" <=")[0]: row["met"] for row in r["rows"]}
    assert met["tf32 model-steps/s"] is True  # R = 1024 reaches 12,000
    assert met["tf32 x PyTorch loop"] is True and met["tf32 x torch.func ensemble"] is False
    assert met["highest x PyTorch loop"] is False
    assert met["bench compile"] is True and met["sweep compile"] is False  # 41 s > 30 s
    assert met["gsweep plan within 2x of the measured wall"] is True  # 90 s vs 100 s
    assert met["one GPU, one device (no CPU-device rule on a GPU host)"] is True
    t = r["tgen"]
    assert t["generalise_at_one_only"] == 1 and t["pairs_both_generalise"] == 6
    assert [c["within"] for c in sorted(t["cells"], key=lambda c: c["cell"]["task.data_frac"])] == [True, False]
    assert t["met"] is False and 0 < t["wilcoxon_p"] <= 1
    assert met["t_gen at tf32 within seed noise of highest"] is False


def test_report_of_an_empty_folder_measures_nothing(tmp_path):
    r = gpu_report.report(tmp_path)
    assert r["rows"] and all(row["met"] is None for row in r["rows"])
    assert gpu_report.main([str(tmp_path / "missing")]) == 2


@pytest.mark.parametrize("flag", [[], ["--json"]])
def test_report_prints(tmp_path, capsys, flag):
    assert gpu_report.main([str(tmp_path), *flag]) == 0
    assert "t_gen" in capsys.readouterr().out
