"""Measure a report page in headless Chromium: file size, the time until the map is drawn, and the time
a click on a cell takes to draw its curves. Usage: python scripts/report_load_time.py PAGE.html [N]"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.browser import Browser  # noqa: E402


def main(page: str, n: int = 3) -> None:
    p = Path(page).resolve()
    print(f"{p}: {p.stat().st_size / 1e6:.1f} MB")
    with Browser(width=1280, height=1500) as b:
        for i in range(n):
            t = b.open(p.as_uri(), "window.gsweep && window.gsweep.ready", timeout=120)
            cells = b.eval("gsweep.state.cells.length")
            runs = b.eval("gsweep.data.runs.run_id.length")
            t0 = time.perf_counter()
            b.eval("gsweep.showCell(0)")
            t_click = time.perf_counter() - t0
            print(f"load {i + 1}: map drawn after {t:.2f} s ({runs} runs, {cells} cells); a cell's curves "
                  f"{1000 * t_click:.0f} ms ({len(b.eval('gsweep.state.curveRunIds'))} runs); errors: {b.errors()}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3)
