"""gsweep: vmapped, sharded sweeps of small transformers that map grokking and multi-step reasoning.

In a notebook: ``gsweep.load(dir)`` reads a results dir, ``gsweep.run(spec, out=...)`` trains one
(:mod:`gsweep.api`). Importing gsweep imports neither JAX nor pandas; ``run`` imports JAX when called.
"""

__version__ = "0.1.0"

__all__ = ["load", "run", "report"]


def load(results_dir, threshold=None, gap=None, gap_mode=None):
    """Read a results dir: ``.runs``, ``.curves``, ``.spec``, ``.meta``, ``.summarize()``, ``.plot``,
    ``.where()`` (see :func:`gsweep.api.load`)."""
    from gsweep.api import load as _load

    return _load(results_dir, threshold, gap, gap_mode)


def run(spec, out=None, overrides=None, fresh=False, extend=False, progress=True):
    """Train a sweep from a notebook and return it loaded (see :func:`gsweep.api.run`)."""
    from gsweep.api import run as _run

    return _run(spec, out=out, overrides=overrides, fresh=fresh, extend=extend, progress=progress)


def report(results_dir, out=None):
    """Write the HTML report of a results dir; returns its path (see :mod:`gsweep.report`)."""
    from gsweep.api import load as _load

    return _load(results_dir).report(out)
