"""Every shipped sweep file parses, validates and says in its header how to run it."""

from pathlib import Path

import pytest

from gsweep.spec import load_spec

SWEEPS_DIR = Path(__file__).resolve().parents[1] / "sweeps"
SWEEPS = sorted(SWEEPS_DIR.rglob("*.yaml"))  # sweeps/literature/ too


def test_there_are_sweeps():
    names = {p.name for p in SWEEPS}
    assert {"ci-tiny.yaml", "quick.yaml", "default.yaml"} <= names


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: str(p.relative_to(SWEEPS_DIR)))
def test_sweep_file_validates(path):
    spec = load_spec(path)
    runs = spec.runs()
    assert runs, path
    header = path.read_text().split("\n\n")[0]
    assert "gsweep run" in header or "make sweep" in header, f"{path.name}: header lacks the command"
