"""What a sweep runs on: the backend check before any work, the persistent compilation cache, and
the records of the environment that meta.json keeps (package versions, the CPU device-count rule).
JAX is imported inside the functions, so importing this module starts no backend."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from gsweep.errors import UserError


def versions() -> dict:
    import importlib.metadata as md
    out = {"python": sys.version.split()[0]}
    for pkg in ("gsweep", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "numpy", "pandas",
                "pyarrow"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def enable_compilation_cache() -> None:
    """Persistent XLA cache (GSWEEP_CACHE_DIR, default ~/.cache/gsweep/jax): repeats skip compiling."""
    import jax
    path = os.environ.get("GSWEEP_CACHE_DIR", str(Path.home() / ".cache" / "gsweep" / "jax"))
    if path.lower() in ("", "0", "off", "none"):
        return
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except Exception as e:  # noqa: BLE001 - a cache is a convenience, never a failure
        print(f"gsweep: compilation cache off ({e})", file=sys.stderr)


def cpu_devices_rule() -> str:
    """How the host platform's device count was chosen (meta.json)."""
    from gsweep.devices import chosen
    return chosen()[1]


def check_backend() -> None:
    """JAX's devices, or a one-line error (``JAX_PLATFORMS=cuda`` on a host without a GPU) before any work."""
    import jax
    try:
        jax.devices()
    except Exception as e:  # noqa: BLE001 - jax raises RuntimeError, AssertionError, ... here
        msg = (str(e).splitlines() or [""])[0][:200]
        raise UserError(f"JAX could not start a backend (JAX_PLATFORMS={os.environ.get('JAX_PLATFORMS', '')!r}): "
                        f"{type(e).__name__}{': ' + msg if msg else ''}") from None
