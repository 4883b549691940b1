"""`gsweep plot {phase-diagram,curves,grok-time} RESULTS_DIR ...`: read a results dir, draw, save.

Figures go to ``RESULTS_DIR/plots/<name>.png`` unless ``--out`` names a file (PNG, SVG or PDF by its
suffix). Reads results only: no JAX.
"""

from __future__ import annotations

from gsweep.errors import UserError

KINDS = ("phase-diagram", "curves", "grok-time")


def plot_command(args) -> int:
    from gsweep.plot import common

    kind = getattr(args, "kind", None)
    if kind not in KINDS:
        raise UserError(f"plot {kind!r}: unknown figure; valid: {', '.join(KINDS)}")
    res = common.load(args)
    if kind == "phase-diagram":
        if res.spec.get("points"):  # a refined, non-grid set of points (gsweep refine): drawn on real axes
            from gsweep.plot.refined import refined_command
            return refined_command(res, args)
        from gsweep.plot.phase_diagram import phase_diagram_command
        return phase_diagram_command(res, args)
    if kind == "curves":
        from gsweep.plot.curves import curves_command
        return curves_command(res, args)
    from gsweep.plot.grok_time import grok_time_command
    return grok_time_command(res, args)
