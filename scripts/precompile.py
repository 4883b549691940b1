"""Write the bytecode of the modules a sweep imports: `make sweep` installs with `pip install
--no-compile` (compiling all ~7,800 files of the dependencies took ~40 s of a ~60 s install on a
2-core CPU) and runs this instead, which compiles only the ~1,700 modules that `gsweep run`, `gsweep
plot phase-diagram` and `gsweep report` load. A module left out is compiled when first imported (and
its bytecode written, unless PYTHONDONTWRITEBYTECODE is set), so nothing depends on this list being
complete. Prints how many files it wrote; exits 1 if one of them does not compile."""

from __future__ import annotations

import compileall
import importlib
import sys
import time

MODULES = (
    # gsweep run: the command line, the engine, checkpoints, the tables
    "gsweep.cli", "gsweep.train.sweep", "gsweep.train.engine", "gsweep.train.memory", "gsweep.checkpoint",
    "gsweep.models.transformer", "gsweep.analysis.summary", "gsweep.replay", "orbax.checkpoint",
    "jax.experimental.multihost_utils", "pyarrow.parquet",
    # gsweep plot phase-diagram, gsweep report
    "gsweep.plot.commands", "gsweep.plot.phase_diagram", "gsweep.plot.refined", "gsweep.report",
    "gsweep.report.data", "gsweep.report.page", "gsweep.api", "matplotlib.pyplot", "plotly.offline",
)


def main() -> int:
    t0 = time.perf_counter()
    for name in MODULES:
        importlib.import_module(name)
    files = sorted({f for m in list(sys.modules.values()) if (f := getattr(m, "__file__", None) or "").endswith(".py")})
    ok = all([compileall.compile_file(f, quiet=2) for f in files])
    print(f"precompile: bytecode of {len(files)} imported modules in {time.perf_counter() - t0:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
