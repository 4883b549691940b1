// gsweep report: draws the phase diagram, the cell view and the other sections from the inlined data.
// window.gsweep exposes the state (cells drawn, the selected cell and the runs whose curves are shown)
// for the browser test and for anyone poking at the page.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("gsweep-data").textContent);
  const R = D.runs, NR = R.run_id.length;
  const PHASES = ["comprehension", "grokking", "memorization", "confusion"];
  const PHASE_COLORS = {comprehension: "#2ca02c", grokking: "#ff7f0e", memorization: "#1f77b4",
                        confusion: "#b0b0b0", diverged: "#404040"};
  const CENSORED = "#e6e6e6", DIVERGED = "#404040";
  const WORDS = {"task.data_frac": "training data fraction", "train.weight_decay": "weight decay",
                 "train.lr": "learning rate", "model.depth": "depth (blocks)", "model.d_model": "model width",
                 "model.init_scale": "initialisation scale", "task.p": "modulus p", seed: "seed"};
  const state = {cells: [], selected: null, curveRunIds: [], x: null, y: null, facet: null, metric: "phase"};
  window.gsweep = {data: D, state: state};

  // ---------------------------------------------------------------- helpers
  const el = (id) => document.getElementById(id);
  const word = (k) => WORDS[k] || k;
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
  function fmtValue(v) {
    if (v === null || v === undefined) return "-";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(4)));
    return String(v);
  }
  function fmtSteps(v) {
    if (Math.abs(v) < 10000) return String(Math.round(v));
    if (Math.abs(v) < 1e6) return Math.round(v / 1000) + "k";
    return (v / 1e6).toFixed(1).replace(".0", "") + "M";
  }
  function sortedValues(vals) {
    const u = Array.from(new Set(vals.filter((v) => v !== null)));
    if (u.every((v) => typeof v === "number")) return u.sort((a, b) => a - b);
    return u.map(String).sort();
  }
  function decodeU16(b64) {
    const bin = atob(b64), n = bin.length, bytes = new Uint8Array(n);
    for (let i = 0; i < n; i++) bytes[i] = bin.charCodeAt(i);
    return new Uint16Array(bytes.buffer);
  }
  // Kaplan-Meier median (gsweep.analysis.survival.km_median): first event time with S <= 0.5, else null
  function kmMedian(dur, obs) {
    const times = Array.from(new Set(dur.filter((d, i) => obs[i]))).sort((a, b) => a - b);
    let s = 1;
    for (const t of times) {
      let atRisk = 0, deaths = 0;
      for (let i = 0; i < dur.length; i++) {
        if (dur[i] >= t) atRisk++;
        if (dur[i] === t && obs[i]) deaths++;
      }
      s *= 1 - deaths / atRisk;
      if (s <= 0.5 + 1e-12) return t;
    }
    return null;
  }
  function quantile(sorted, q) {
    const pos = (sorted.length - 1) * q, lo = Math.floor(pos), hi = Math.ceil(pos);
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
  }

  // ---------------------------------------------------------------- curves (decoded lazily per split)
  const C = D.curves, NS = C.steps.length, cache = {};
  function matrix(measure, split) {
    const key = measure + "/" + split;
    if (!cache[key]) cache[key] = C[measure][split] ? decodeU16(C[measure][split]) : null;
    return cache[key];
  }
  function runCurve(measure, split, i) {
    const m = matrix(measure, split), xs = [], ys = [];
    if (!m) return {x: xs, y: ys};
    const [lo, hi] = C.loss_log10;
    for (let j = 0; j < NS; j++) {
      const q = m[i * NS + j];
      if (q === 65535) continue;
      xs.push(C.steps[j]);
      ys.push(measure === "acc" ? q / 65534 : Math.pow(10, lo + (q / 65534) * (hi - lo)));
    }
    return {x: xs, y: ys};
  }

  // ---------------------------------------------------------------- cells
  function isShare(m) { return m === "p_grokking" || m.startsWith("share:"); }
  function metricOptions() {
    const m = [["phase", "phase (majority over seeds)"], ["p_grokking", "P(grokking)"]];
    for (const p of PHASES) m.push(["share:" + p, "share of runs in phase " + p + " (minorities visible)"]);
    for (const c of D.step_metrics) {
      const label = c === "t_fit" ? "t_fit: steps to fit (train)" : c === "t_gen" ? "t_gen: steps to generalise (test)"
        : c + ": steps to reach " + c.slice(2);
      m.push([c, label]);
      if (c === "t_gen" && R.delay) m.push(["delay", "delay: t_gen - t_fit (steps)"]);
    }
    return m;
  }
  function cellStat(idx) {
    const ok = idx.filter((i) => !R.diverged[i]), n = ok.length, nDiv = idx.length - n;
    const cell = {runs: idx, n_runs: idx.length, n: n, n_diverged: nDiv};
    const metric = state.metric;
    if (n === 0) return Object.assign(cell, {kind: "diverged", text: "diverged", color: DIVERGED});
    const done = ok.map((i) => R.steps_done[i]);
    if (metric === "phase") {
      const counts = {};
      PHASES.forEach((p) => (counts[p] = 0));
      ok.forEach((i) => { if (counts[R.phase[i]] !== undefined) counts[R.phase[i]]++; });
      const nLab = PHASES.reduce((a, p) => a + counts[p], 0);
      if (nLab === 0) return Object.assign(cell, {kind: "diverged", text: "no phase", color: DIVERGED});
      const best = Math.max(...PHASES.map((p) => counts[p]));
      const maj = PHASES.find((p) => counts[p] === best);
      const tie = PHASES.filter((p) => counts[p] === best).length > 1;
      return Object.assign(cell, {kind: "phase", phase: maj, z: PHASES.indexOf(maj), counts: counts,
        text: best + "/" + nLab + (tie ? " tie" : ""), color: PHASE_COLORS[maj]});
    }
    if (isShare(metric)) {
      const ph = metric === "p_grokking" ? "grokking" : metric.slice(6);
      const k = ok.filter((i) => R.phase[i] === ph).length;
      return Object.assign(cell, {kind: "value", value: k / n, z: k / n, text: (k / n).toFixed(2) + "<br>(" + k + "/" + n + ")"});
    }
    let dur, obs, sub = ok;
    if (metric === "delay") {
      sub = ok.filter((i) => R.t_fit[i] !== null);
      if (!sub.length) return Object.assign(cell, {kind: "censored", text: "no fit", bound: null});
      obs = sub.map((i) => R.t_gen[i] !== null);
      dur = sub.map((i, j) => obs[j] ? R.t_gen[i] - R.t_fit[i] : R.steps_done[i] - R.t_fit[i]);
    } else {
      obs = ok.map((i) => R[metric][i] !== null);
      dur = ok.map((i, j) => obs[j] ? R[metric][i] : done[j]);
    }
    const med = kmMedian(dur, obs), reached = obs.filter(Boolean).length;
    if (med === null) {
      const bound = Math.max(...(metric === "delay" ? dur : done));
      return Object.assign(cell, {kind: "censored", bound: bound, reached: reached, text: ">" + fmtSteps(bound)});
    }
    return Object.assign(cell, {kind: "value", value: med, reached: reached,
      z: Math.log10(Math.max(med, 0.5)), text: fmtSteps(med) + (reached < sub.length ? "<br>(" + reached + "/" + sub.length + ")" : "")});
  }
  function computeCells() {
    const {x, y, facet} = state;
    const xs = x ? sortedValues(R[x]) : [null], ys = y ? sortedValues(R[y]) : [null];
    const fs = facet ? sortedValues(R[facet]) : [null];
    const groups = new Map();
    for (let i = 0; i < NR; i++) {
      const key = [facet ? R[facet][i] : null, y ? R[y][i] : null, x ? R[x][i] : null].map(String).join("\u0001");
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(i);
    }
    const cells = [];
    for (const [fi, fv] of fs.entries()) for (const [yi, yv] of ys.entries()) for (const [xi, xv] of xs.entries()) {
      const idx = groups.get([fv, yv, xv].map(String).join("\u0001"));
      if (!idx) continue;
      const c = cellStat(idx);
      if (c.n_diverged && c.n) c.text += "<br>+" + c.n_diverged + " div.";
      Object.assign(c, {fi: fi, xi: xi, yi: yi, facet: fv, x: xv, y: yv, id: cells.length});
      cells.push(c);
    }
    return {cells: cells, xs: xs, ys: ys, fs: fs};
  }

  // ---------------------------------------------------------------- the map
  function phaseScale() {
    const cs = [];
    PHASES.forEach((p, k) => { cs.push([k / 4, PHASE_COLORS[p]]); cs.push([(k + 1) / 4, PHASE_COLORS[p]]); });
    return cs;
  }
  function drawMap() {
    const {cells, xs, ys, fs} = computeCells();
    state.cells = cells;
    const metric = state.metric, nf = fs.length, ncol = Math.min(nf, 3), nrow = Math.ceil(nf / ncol);
    const traces = [], shapes = [], annotations = [], layout = {grid: {rows: nrow, columns: ncol, pattern: "independent"},
      margin: {l: 90, r: 30, t: 40, b: 60}, showlegend: false, hovermode: "closest"};
    const zs = cells.filter((c) => c.kind === "value").map((c) => c.z);
    const zmin = zs.length ? Math.min(...zs) : 0, zmax = zs.length ? Math.max(...zs) : 1;
    for (let f = 0; f < nf; f++) {
      const ax = f === 0 ? "" : String(f + 1);
      const grid = (fill) => ys.map(() => xs.map(() => fill));
      const z = grid(null), zc = grid(null), text = grid(""), cd = grid(null);
      for (const c of cells.filter((c) => c.fi === f)) {
        text[c.yi][c.xi] = c.text;
        cd[c.yi][c.xi] = c.id;
        if (c.kind === "phase" || c.kind === "value") z[c.yi][c.xi] = c.z;
        else zc[c.yi][c.xi] = c.kind === "diverged" ? 1 : 0;
        if (c.kind === "censored") {
          const x0 = c.xi - 0.5, y0 = c.yi - 0.5;
          let p = "";
          for (let t = 0.25; t < 2; t += 0.25) {
            const a = [x0 + Math.max(0, t - 1), y0 + Math.min(t, 1)], b = [x0 + Math.min(t, 1), y0 + Math.max(0, t - 1)];
            p += "M" + a[0] + "," + a[1] + "L" + b[0] + "," + b[1];
          }
          shapes.push({type: "path", path: p, xref: "x" + ax, yref: "y" + ax, line: {color: "#999", width: 1}, layer: "above"});
        }
      }
      const common = {x: xs.map((_, i) => i), y: ys.map((_, i) => i), xaxis: "x" + ax, yaxis: "y" + ax, customdata: cd,
        text: text, texttemplate: "%{text}", hovertemplate: "%{text}<extra></extra>", xgap: 2, ygap: 2, showscale: false};
      traces.push(Object.assign({type: "heatmap", z: zc, colorscale: [[0, CENSORED], [1, DIVERGED]], zmin: 0, zmax: 1,
        textfont: {color: "#222"}, name: "censored"}, common));
      const main = {type: "heatmap", z: z, name: "cells"};
      if (metric === "phase") Object.assign(main, {colorscale: phaseScale(), zmin: -0.5, zmax: 3.5});
      else Object.assign(main, {colorscale: "Viridis", zmin: isShare(metric) ? 0 : zmin,
        zmax: isShare(metric) ? 1 : (zmax > zmin ? zmax : zmin + 1), showscale: f === 0,
        colorbar: isShare(metric) ? {title: {text: metric === "p_grokking" ? "P(grokking)" : "share " + metric.slice(6)}}
          : stepColorbar(zmin, zmax)});
      traces.push(Object.assign(common, main, {showscale: main.showscale || false}));
      layout["xaxis" + ax] = {tickvals: xs.map((_, i) => i), ticktext: xs.map(fmtValue), title: {text: word(state.x || "")},
        showgrid: false, zeroline: false};
      layout["yaxis" + ax] = {tickvals: ys.map((_, i) => i), ticktext: ys.map(fmtValue),
        title: {text: f % ncol === 0 ? word(state.y || "all runs") : ""}, showgrid: false, zeroline: false};
      if (state.facet) annotations.push({text: word(state.facet) + " = " + fmtValue(fs[f]), showarrow: false,
        xref: "x" + ax + " domain", yref: "y" + ax + " domain", x: 0.5, y: 1.0, yanchor: "bottom", font: {size: 13}});
    }
    layout.shapes = shapes;
    layout.annotations = annotations;
    layout.height = Math.max(320, nrow * (Math.max(ys.length, 2) * 46 + 110));
    const gd = el("map");
    Plotly.react(gd, traces, layout, {displaylogo: false, responsive: true});
    if (!gd._gsweepClick) {
      gd.on("plotly_click", (ev) => {
        const pt = ev.points && ev.points[0];
        if (!pt) return;
        const id = Array.isArray(pt.customdata) ? null : pt.customdata;
        if (id !== null && id !== undefined) showCell(id);
      });
      gd._gsweepClick = true;
    }
    gd.dataset.cells = String(cells.length);
    drawLegend();
    const pooled = D.swept.filter((k) => k !== state.x && k !== state.y && k !== state.facet);
    el("map-note").textContent = (pooled.length ? "Cells pool the runs over " + pooled.map(word).join(", ") + ". " : "") +
      (metric === "phase" ? "Colour: the majority phase over the cell's runs; text: runs agreeing with it."
        : isShare(metric) ? "Share of the cell's (non-diverged) runs whose phase is " +
          (metric === "p_grokking" ? "grokking" : metric.slice(6)) + "; text: share (k/n)."
        : "Kaplan-Meier median over the cell's runs; a run that never got there is censored at the steps it ran. " +
          "Grey and hatched, >N: more than half never got there within N steps. (k/n): runs that got there.");
  }
  function stepColorbar(zmin, zmax) {
    const vals = [], txt = [];
    for (let e = Math.floor(zmin); e <= Math.ceil(zmax); e++) for (const m of [1, 2, 5]) {
      const v = Math.log10(m * Math.pow(10, e));
      if (v >= zmin - 1e-9 && v <= zmax + 1e-9) { vals.push(v); txt.push(fmtSteps(m * Math.pow(10, e))); }
    }
    return {title: {text: "steps (median)"}, tickvals: vals, ticktext: txt};
  }
  function drawLegend() {
    const L = el("legend");
    if (state.metric === "phase") {
      L.innerHTML = PHASES.map((p) => '<span class="sw" style="background:' + PHASE_COLORS[p] + '"></span>' + p).join("") +
        '<span class="sw" style="background:' + DIVERGED + '"></span>all runs diverged';
    } else if (!isShare(state.metric)) {
      L.innerHTML = '<span class="sw" style="background:' + CENSORED + '"></span>censored: median not reached within the budget' +
        '<span class="sw" style="background:' + DIVERGED + '"></span>all runs diverged';
    } else L.innerHTML = "";
  }

  // ---------------------------------------------------------------- a cell: curves and rows
  const SPLIT_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
  function showCell(id) {
    const c = state.cells[id];
    if (!c) return;
    state.selected = c;
    const desc = [[state.facet, c.facet], [state.y, c.y], [state.x, c.x]].filter((p) => p[0])
      .map((p) => word(p[0]) + " = " + fmtValue(p[1])).join(", ");
    el("cell").hidden = false;
    el("cell-title").textContent = "Cell " + (desc || "(all runs)") + ": " + c.n_runs + " run(s)" +
      (c.n_diverged ? ", " + c.n_diverged + " diverged" : "");
    const splits = C.splits, traces = [], layout = {grid: {rows: 2, columns: Math.max(1, splits.length), pattern: "independent"},
      height: 560, margin: {l: 60, r: 20, t: 30, b: 50}, showlegend: false, hovermode: "closest"};
    const shown = new Set();
    splits.forEach((s, k) => {
      ["acc", "loss"].forEach((measure, row) => {
        const n = row * splits.length + k + 1, ax = n === 1 ? "" : String(n), col = SPLIT_COLORS[k % SPLIT_COLORS.length];
        const byStep = new Map();
        for (const i of c.runs) {
          const cv = runCurve(measure, s, i);
          if (!cv.x.length) continue;
          shown.add(R.run_id[i]);
          traces.push({type: "scatter", mode: "lines", x: cv.x, y: cv.y, xaxis: "x" + ax, yaxis: "y" + ax,
            line: {color: col, width: 0.8}, opacity: 0.35, meta: {run: R.run_id[i], split: s, measure: measure},
            hovertemplate: R.run_id[i] + " seed " + fmtValue(R.seed ? R.seed[i] : null) + "<br>step %{x}: %{y:.4g}<extra></extra>"});
          cv.x.forEach((st, j) => { if (!byStep.has(st)) byStep.set(st, []); byStep.get(st).push(cv.y[j]); });
        }
        const steps = Array.from(byStep.keys()).sort((a, b) => a - b);
        const q = (p) => steps.map((st) => quantile(byStep.get(st).slice().sort((a, b) => a - b), p));
        if (steps.length) {
          traces.push({type: "scatter", mode: "lines", x: steps, y: q(0.25), xaxis: "x" + ax, yaxis: "y" + ax,
            line: {width: 0}, hoverinfo: "skip", meta: {band: s}});
          traces.push({type: "scatter", mode: "lines", x: steps, y: q(0.75), xaxis: "x" + ax, yaxis: "y" + ax,
            line: {width: 0}, fill: "tonexty", fillcolor: col + "33", hoverinfo: "skip", meta: {band: s}});
          traces.push({type: "scatter", mode: "lines", x: steps, y: q(0.5), xaxis: "x" + ax, yaxis: "y" + ax,
            line: {color: col, width: 2.4}, meta: {median: s}, hovertemplate: "median, step %{x}: %{y:.4g}<extra></extra>"});
        }
        layout["xaxis" + ax] = {type: "log", title: {text: row === 1 ? "step (log scale)" : ""}};
        layout["yaxis" + ax] = measure === "acc" ? {range: [-0.02, 1.02], title: {text: k === 0 ? "accuracy" : ""}}
          : {type: "log", title: {text: k === 0 ? "loss" : ""}};
        if (measure === "acc") {
          layout.shapes = (layout.shapes || []).concat([{type: "line", xref: "x" + ax + " domain", yref: "y" + ax, x0: 0, x1: 1,
            y0: D.threshold, y1: D.threshold, line: {dash: "dot", width: 1, color: "#000"}}]);
          layout.annotations = (layout.annotations || []).concat([{text: s, showarrow: false, xref: "x" + ax + " domain",
            yref: "y" + ax + " domain", x: 0.5, y: 1, yanchor: "bottom"}]);
        }
      });
    });
    state.curveRunIds = Array.from(shown).sort();
    const gd = el("curves");
    Plotly.react(gd, traces, layout, {displaylogo: false, responsive: true});
    gd.dataset.runIds = state.curveRunIds.join(" ");
    const cols = Object.keys(R).filter((k) => k !== "diverged");
    el("cell-runs").innerHTML = '<div class="scroll"><table><thead><tr>' + cols.map((k) => "<th>" + esc(k) + "</th>").join("") +
      "</tr></thead><tbody>" + c.runs.map((i) => '<tr data-run="' + esc(R.run_id[i]) + '">' +
        cols.map((k) => "<td>" + esc(fmtValue(R[k][i])) + "</td>").join("") + "</tr>").join("") + "</tbody></table></div>";
  }

  // ---------------------------------------------------------------- controls and the other sections
  function fillSelect(sel, options, value) {
    sel.innerHTML = options.map(([v, t]) => '<option value="' + esc(v) + '"' + (v === value ? " selected" : "") + ">" + esc(t) + "</option>").join("");
  }
  function setup() {
    const keys = D.swept.length ? D.swept : (R["task.data_frac"] ? ["task.data_frac"] : []);
    state.x = D.defaults.x; state.y = D.defaults.y; state.facet = D.defaults.facet;
    const opts = (none) => [["", none]].concat(keys.concat(R.seed && keys.indexOf("seed") < 0 ? ["seed"] : []).map((k) => [k, word(k) + " (" + k + ")"]));
    fillSelect(el("sel-x"), opts("(none)"), state.x || "");
    fillSelect(el("sel-y"), opts("(none)"), state.y || "");
    fillSelect(el("sel-facet"), opts("(none: pool)"), state.facet || "");
    fillSelect(el("sel-metric"), metricOptions(), state.metric);
    const onChange = (which) => (ev) => {
      const v = ev.target.value || null;
      for (const k of ["x", "y", "facet"]) if (k !== which && v && state[k] === v) { state[k] = null; el("sel-" + k).value = ""; }
      state[which] = v;
      el("cell").hidden = true; state.selected = null; state.curveRunIds = [];
      drawMap();
    };
    ["x", "y", "facet"].forEach((k) => el("sel-" + k).addEventListener("change", onChange(k)));
    el("sel-metric").addEventListener("change", (ev) => { state.metric = ev.target.value; drawMap(); });
    if (D.banner) { el("banner").textContent = D.banner; el("banner").hidden = false; }
    el("grok").innerHTML = !D.grok_time ? '<p class="note">No t_gen column: nothing to draw.</p>'
      : D.grok_time.startsWith("data:") ? '<img class="fig" alt="grok time" src="' + D.grok_time + '">'
      : '<p class="note">' + esc(D.grok_time) + "</p>";
    el("analysis").innerHTML = D.analysis_text ? "<pre>" + esc(D.analysis_text) + "</pre>" : '<p class="note">No analysis.json: run ' +
      "<code>gsweep analyze " + esc(D.path) + "</code> (needs a task with multi-step splits) and report again.</p>";
    const figs = (kind) => D.figures.filter((f) => f.kind === kind).map((f) => '<figure><img class="fig" alt="' + esc(f.title) +
      '" src="' + f.src + '"><figcaption>' + esc(f.title) + "</figcaption></figure>").join("");
    el("analysis").innerHTML += '<div class="figs">' + figs("analyze") + "</div>";
    const rf = figs("replay");
    el("figures").innerHTML = rf ? '<div class="figs">' + rf + "</div>" : '<p class="note">No replayed runs: ' +
      "<code>gsweep plot fourier " + esc(D.path) + " RUN_ID</code> (or attention, neurons) replays a run and draws it; report again to include it.</p>";
    const P = D.provenance, row = (k, v) => "<tr><th>" + esc(k) + "</th><td style='text-align:left'>" + esc(v === null || v === undefined ? "-" : v) + "</td></tr>";
    const wall = P.wall_s === null ? "-" : P.wall_s >= 3600 ? (P.wall_s / 3600).toFixed(2) + " h" : P.wall_s >= 60 ? (P.wall_s / 60).toFixed(1) + " min" : P.wall_s.toFixed(1) + " s";
    el("provenance").innerHTML = "<table>" + row("status", P.status) + row("command", P.command) + row("started", P.started) +
      row("finished", P.finished) + row("wall time", wall) + row("backend", P.backend) + row("device", P.device_kind) +
      row("devices", (P.devices || []).join(", ")) + row("precision", JSON.stringify(P.precision)) + row("host", P.host) +
      Object.entries(P.versions || {}).map(([k, v]) => row(k, v)).join("") + "</table>" +
      "<h3>spec.yaml (as run)</h3><pre>" + esc(P.spec_yaml || "(no spec.yaml)") + "</pre>" +
      (P.groups ? "<h3>groups</h3><pre>" + esc(JSON.stringify(P.groups, null, 1)) + "</pre>" : "");
    drawMap();
    window.gsweep.ready = true;
  }
  window.gsweep.showCell = showCell;
  // the centre of cell ``id`` in page pixels (the browser test clicks there)
  window.gsweep.cellCenter = function (id) {
    const c = state.cells[id], gd = el("map"), ax = c.fi === 0 ? "" : String(c.fi + 1);
    const xa = gd._fullLayout["xaxis" + ax], ya = gd._fullLayout["yaxis" + ax], r = gd.getBoundingClientRect();
    return {x: r.left + window.scrollX + xa._offset + xa.l2p(c.xi), y: r.top + window.scrollY + ya._offset + ya.l2p(c.yi)};
  };
  if (NR === 0) {
    el("map").innerHTML = '<p class="banner">runs.parquet has no runs: nothing to draw yet.</p>';
    window.gsweep.ready = true;
  } else setup();
})();
