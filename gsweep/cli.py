"""The `gsweep` command line: parse, call one library function, print. JAX is imported only by the
commands that train (run, replay, bench, plot attention/fourier/neurons)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gsweep.errors import UserError


def init_distributed(args) -> None:
    import jax
    if args.coordinator or args.distributed:
        if args.coordinator and (args.num_processes is None or args.process_id is None):
            raise UserError("--coordinator needs --num-processes and --process-id")
        try:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        except Exception:  # noqa: BLE001 - older/newer jax: the default may already work
            pass
        if args.coordinator:
            jax.distributed.initialize(args.coordinator, num_processes=args.num_processes, process_id=args.process_id)
        else:
            jax.distributed.initialize()


def run_command(args) -> int:
    from gsweep.spec import load_spec
    from gsweep.train.environment import check_backend
    from gsweep.train.resultsdir import check_out_path
    from gsweep.train.signals import Interrupted, ignore_signals
    from gsweep.train.sweep import run_sweep
    from gsweep.train.units import parse_shard

    spec = load_spec(args.sweep, args.set, allow_large=getattr(args, "allow_large", False))  # every spec error first
    if args.fresh and args.extend:
        raise UserError("--fresh and --extend contradict each other; pick one")
    if args.fresh and getattr(args, "rollback", False):
        raise UserError("--fresh and --rollback contradict each other; pick one")
    shard = parse_shard(args.shard)
    if shard and (args.coordinator or args.distributed):
        raise UserError("--shard and jax.distributed are two ways to split a sweep; use one")
    out = Path(args.out) if args.out else Path("results") / spec.name
    check_out_path(out)
    init_distributed(args)
    check_backend()
    cmd = "gsweep " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0] else ""
    try:
        res = run_sweep(spec, out, fresh=args.fresh, extend=args.extend, shard=shard, progress=not args.quiet,
                        command=cmd, rollback=getattr(args, "rollback", False))
    except Interrupted as e:
        ignore_signals()  # a further signal must not interrupt JAX's exit handlers (no traceback)
        print(f"gsweep: {e}", file=sys.stderr)
        return e.exit_code
    import jax
    where = spec.analysis.get("snapshot_where")
    if where and jax.process_index() == 0 and res.runs is not None:
        from gsweep.replay import snapshot_runs
        ids = snapshot_runs(out, res.runs, where, spec.analysis.get("snapshot_steps") or "log")
        print(f"{out}: parameter snapshots of {len(ids)} run(s) under {out}/replays/")
    if jax.process_index() == 0 and res.runs is not None:
        r = res.runs
        counts = r["phase"].value_counts(dropna=True).to_dict()
        div = int((r["status"] == "diverged").sum())
        print(f"{out}: {len(r)} runs; phases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
              + (f"; diverged {div}" if div else ""))
        follow_ups(out, phase_diagram=getattr(args, "phase_diagram", False), report=getattr(args, "report", False))
    return 0


def follow_ups(out: Path, phase_diagram: bool = False, report: bool = False) -> None:
    """``gsweep run --phase-diagram --report``: after the sweep, in this process, exactly what
    ``gsweep plot phase-diagram OUT`` and ``gsweep report OUT`` do (one interpreter start and one
    set of imports for the three, which is what ``make sweep`` runs)."""
    argvs = ([["plot", "phase-diagram", str(out)]] if phase_diagram else []) + ([["report", str(out)]] if report else [])
    if not argvs:
        return
    for argv in argvs:
        a = build_parser().parse_args(argv)
        a.fn(a)


def _validate(a):
    from gsweep.spec import load_spec
    from gsweep.spec.guards import GRID_ASK
    from gsweep.spec.validate import grid_size
    spec = load_spec(a.sweep, a.set, allow_large=a.allow_large)
    n = grid_size([spec.task, spec.model, spec.train], len(spec.seeds))
    if n > GRID_ASK:  # state the size without materialising every run
        print(f"{a.sweep}: ok — sweep {spec.name!r}: a grid of {n:,} runs (--allow-large); "
              f"swept: {', '.join(spec.swept_keys) or 'nothing'}")
        return 0
    runs = spec.runs()
    groups = sorted({r.group_id for r in runs})
    print(f"{a.sweep}: ok — sweep {spec.name!r}: {len(runs)} runs in {len(groups)} group(s); "
          f"swept: {', '.join(spec.swept_keys) or 'nothing'}")
    return 0


def _ls(a):
    from gsweep.store import list_sweeps
    return list_sweeps(a.root)


def _summarize(a):
    from gsweep.analysis.summary import summarize_command
    return summarize_command(a)


def _plot(a):
    if a.kind in ("attention", "fourier", "neurons"):
        from gsweep.replay import plot_command
        return plot_command(a)
    from gsweep.plot.commands import plot_command
    return plot_command(a)


def _analyze(a):
    from gsweep.analysis.predict import analyze_command
    return analyze_command(a)


def _merge(a):
    from gsweep.store import merge_command
    return merge_command(a)


def _bench(a):
    from gsweep.bench import bench_command
    return bench_command(a)


def _report(a):
    from gsweep.report import report_command
    return report_command(a)


def _plan(a):
    from gsweep.plan import plan_command
    return plan_command(a)


def _replay(a):
    from gsweep.replay import replay_command
    return replay_command(a)


def _refine(a):
    from gsweep.refine import refine_command
    return refine_command(a)


def _label_flags(q) -> None:
    q.add_argument("--threshold", type=float, help="accuracy threshold (default: the spec's analysis block)")
    q.add_argument("--gap", type=float, help="fit-to-generalise gap (default: the spec's analysis block)")
    q.add_argument("--gap-mode", choices=("relative", "absolute"))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gsweep", description="Accelerated sweeps of small transformers: "
                                 "where grokking and multi-step reasoning emerge.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train a sweep into a results dir (resumes when it exists)")
    p.add_argument("sweep")
    p.add_argument("--out", help="results dir (default results/<name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a leaf of the spec")
    p.add_argument("--fresh", action="store_true", help="discard an existing results dir and start over")
    p.add_argument("--extend", action="store_true", help="accept a spec that only adds runs to the results dir")
    p.add_argument("--shard", metavar="I/N", help="train only shard I of N (job arrays; SLURM_ARRAY_* read too)")
    p.add_argument("--coordinator", metavar="HOST:PORT", help="jax.distributed coordinator address")
    p.add_argument("--num-processes", type=int)
    p.add_argument("--process-id", type=int)
    p.add_argument("--distributed", action="store_true", help="jax.distributed.initialize() with cluster autodetection")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--allow-large", action="store_true", help="accept a grid of more than 100,000 runs")
    p.add_argument("--rollback", action="store_true",
                   help="resume from the previous good checkpoint when the latest one is damaged")
    p.add_argument("--phase-diagram", action="store_true",
                   help="then draw the phase diagram, as `gsweep plot phase-diagram OUT` (in this process)")
    p.add_argument("--report", action="store_true",
                   help="then write OUT/report.html, as `gsweep report OUT` (in this process)")
    p.set_defaults(fn=run_command)

    p = sub.add_parser("validate", help="check a sweep file and print its grid size")
    p.add_argument("sweep")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--allow-large", action="store_true", help="accept a grid of more than 100,000 runs")
    p.set_defaults(fn=_validate)

    p = sub.add_parser("ls", help="list sweeps under a results root and their status")
    p.add_argument("root", nargs="?", default="results")
    p.set_defaults(fn=_ls)

    p = sub.add_parser("summarize", help="per-cell summary: P(grokking), Kaplan-Meier medians, phases")
    p.add_argument("results_dir")
    p.add_argument("--by", nargs="+", help="keys that define a cell (default: the swept keys but seed)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    _label_flags(p)
    p.add_argument("--sensitivity", action="store_true",
                   help="also the phase counts over threshold {0.8,0.9,0.95,0.99} x gap {2,5,10,20}")
    p.set_defaults(fn=_summarize)

    p = sub.add_parser("plot", help="figures from a results dir")
    psub = p.add_subparsers(dest="kind", required=True)
    q = psub.add_parser("phase-diagram", help="phase (or any runs.parquet column) over two swept keys")
    q.add_argument("results_dir")
    q.add_argument("--x")
    q.add_argument("--y")
    q.add_argument("--facet")
    q.add_argument("--metric", default="phase")
    q.add_argument("--out")
    _label_flags(q)
    q = psub.add_parser("curves", help="accuracy and loss against step: median and IQR over seeds")
    q.add_argument("results_dir")
    q.add_argument("--where", help="filter over runs.parquet columns, e.g. \"train.weight_decay > 0 and seed in [0, 1]\"")
    q.add_argument("--split", nargs="+", action="extend")
    q.add_argument("--out")
    _label_flags(q)
    q = psub.add_parser("grok-time", help="steps to generalise against data fraction")
    q.add_argument("results_dir")
    q.add_argument("--out")
    _label_flags(q)
    for kind, hlp in (("attention", "attention patterns per layer and head"),
                      ("fourier", "embedding Fourier power over steps"),
                      ("neurons", "MLP activations over the (x, y) grid")):
        q = psub.add_parser(kind, help=hlp)
        q.add_argument("results_dir")
        q.add_argument("run_id")
        q.add_argument("--step", type=int, nargs="+", action="extend")
        q.add_argument("--out")
    p.set_defaults(fn=_plot)

    p = sub.add_parser("analyze", help="does grokking predict reasoning? joint table, predictors, AUROC")
    p.add_argument("results_dir")
    p.add_argument("--source", default="test")
    p.add_argument("--target")
    p.add_argument("--where", help="analyze only the runs matching this filter over runs.parquet columns, "
                   "e.g. \"task.op == 'sub'\" (its files get a -wHASH suffix)")
    p.add_argument("--window", type=float, default=0.1)
    p.add_argument("--threshold", type=float)
    p.set_defaults(fn=_analyze)

    p = sub.add_parser("report", help="one self-contained HTML page of a sweep (works offline)")
    p.add_argument("results_dir")
    p.add_argument("--out", help="the HTML file (default RESULTS_DIR/report.html)")
    p.set_defaults(fn=_report)
    p = sub.add_parser("refine", help="add runs at the midpoints of phase boundaries and train them (same results dir)")
    p.add_argument("results_dir")
    p.add_argument("--x")
    p.add_argument("--y")
    p.add_argument("--rounds", type=int, default=1, help="refine until the results dir holds N rounds (default 1)")
    p.add_argument("--max-runs", type=int, help="at most N runs added by this command")
    p.add_argument("--metric", help="a runs.parquet column: boundaries where cell medians cross --level")
    p.add_argument("--level", type=float)
    p.add_argument("--plan", metavar="FILE", help="write the next round's spec to FILE; train nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=_refine)

    p = sub.add_parser("merge", help="combine shard results dirs into one")
    p.add_argument("dirs", nargs="+")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=_merge)

    p = sub.add_parser("bench", help="throughput of gsweep against the PyTorch peers on this machine "
                       "(on CPU: every core, one XLA device each)")
    p.add_argument("--device", choices=("cpu", "gpu"), default=None)
    p.add_argument("--models", type=int, nargs="+")
    p.add_argument("--peer", default=None, help="a PyTorch peer script (default: gsweep/bench/torch_peer.py)")
    p.add_argument("--batching", choices=("auto", "map", "vmap"), default=None,
                   help="gsweep's train.batching (auto: map on CPU, vmap on accelerators)")
    p.add_argument("--steps", type=int)
    p.add_argument("--p", type=int)
    p.add_argument("--precision", nargs="+", choices=("highest", "tf32", "bf16"))
    p.add_argument("--quick", action="store_true", help="CI-sized: tiny model and few steps")
    p.add_argument("--out", default="results/bench")
    p.set_defaults(fn=_bench)

    p = sub.add_parser("plan", help="what a sweep will cost here: runs per chunk, memory, estimated wall time")
    p.add_argument("sweep")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a leaf of the spec")
    p.add_argument("--probe-steps", type=int, default=1, help="steps per timed probe call (default 1)")
    p.set_defaults(fn=_plan)

    p = sub.add_parser("replay", help="re-train one run alone and save its parameters at chosen steps")
    p.add_argument("results_dir")
    p.add_argument("run_id")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", help="comma-separated steps")
    g.add_argument("--log-steps", type=int, help="N log-spaced steps")
    p.set_defaults(fn=_replay)
    return ap


def _one_line(e: BaseException) -> str:
    """The error as one line: the first line in full, and how many more there are (spec diffs)."""
    return str(e).replace("\x00", "\\x00")


def main(argv: list[str] | None = None) -> int:
    """Every expected failure is ``gsweep: error: <message>`` and exit status 2, never a traceback:
    bad input (UserError/SpecError), files that cannot be read or written (OSError), damaged files
    (parquet/JSON/YAML that do not parse), and paths that cannot exist (NUL)."""
    import json

    from gsweep.errors import UserError
    from gsweep.spec.sweepfile import SpecError

    args = build_parser().parse_args(argv)
    import signal

    def on_term(signum, frame):  # SIGTERM unwinds like SIGINT (temporaries removed); `run` installs its own
        raise Terminated()
    try:
        old_term = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        old_term = None
    try:
        from gsweep.devices import configure
        configure()  # one XLA CPU device per usable core (GSWEEP_CPU_DEVICES), before JAX starts
        rc = args.fn(args)
    except (SpecError, UserError) as e:
        print(f"gsweep: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `gsweep summarize ... | head`
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as e:
        from gsweep.train.signals import ignore_signals
        ignore_signals()  # a further signal must not interrupt the exit handlers (JAX's) with a traceback
        print("gsweep: interrupted", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except OSError as e:  # a path that cannot be read or written
        where = e.filename if e.filename is not None else ""
        print(f"gsweep: error: {where}{': ' if where else ''}{e.strerror or e}", file=sys.stderr)
        return 2
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        print(f"gsweep: error: a damaged file ({type(e).__name__}: {str(e)[:200]})", file=sys.stderr)
        return 2
    except ValueError as e:
        if "null byte" in str(e) or "NUL" in str(e):
            print(f"gsweep: error: a path cannot hold a NUL character ({e})", file=sys.stderr)
            return 2
        if _is_damaged_file_error(e):
            print(f"gsweep: error: a damaged results file ({type(e).__name__}: {str(e)[:200]})", file=sys.stderr)
            return 2
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow/yaml errors on damaged files
        if isinstance(e, RuntimeError) and "Unable to initialize backend" in str(e):  # JAX_PLATFORMS=cuda on CPU
            print(f"gsweep: error: JAX could not start the requested platform ({str(e).splitlines()[0][:200]}); "
                  "check JAX_PLATFORMS", file=sys.stderr)
            return 2
        if _is_damaged_file_error(e):
            print(f"gsweep: error: a damaged results file ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                  file=sys.stderr)
            return 2
        raise
    finally:
        if old_term is not None and signal.getsignal(signal.SIGTERM) is on_term:
            signal.signal(signal.SIGTERM, old_term)
    return int(rc or 0)


class Terminated(KeyboardInterrupt):
    """SIGTERM outside a sweep's own handling: unwinds like Ctrl-C, exit status 143."""


def _is_damaged_file_error(e: BaseException) -> bool:
    mod = type(e).__module__ or ""
    return mod.startswith(("pyarrow", "yaml")) or "parquet" in str(e).lower() or "Parquet" in type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
