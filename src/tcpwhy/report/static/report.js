// tcpwhy HTML report: charts, the connection table and ladders drawn from the embedded data.
// Every string from a capture is written with textContent, never as markup.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("tcpwhy-data").textContent);
  const SVGNS = "http://www.w3.org/2000/svg";
  // the geometry of tcpwhy/report/svg.py: keep in step
  const LADDER = { WIDTH: 900, TIME_X: 8, FRAME_X: 118, CLIENT_X: 330, SERVER_X: 690, HEAD: 56, ROW: 26, FOOT: 34 };
  const PAGE = 50;

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function sv(tag, attrs, text) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs || {}) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  // ---- ladder (as svg.py draws it) ----
  function drawLadder(v) {
    const [client, server, cStart, sStart, cFinal, sFinal, rows] = v;
    const L = LADDER;
    const h = L.HEAD + L.ROW * rows.length + L.FOOT;
    const svg = sv("svg", { class: "ladder", width: L.WIDTH, height: h, viewBox: `0 0 ${L.WIDTH} ${h}`,
      role: "img", "font-family": "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace", "font-size": 12 });
    const defs = sv("defs");
    const mk = sv("marker", { id: "lad-arr-js", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
    mk.appendChild(sv("path", { d: "M0,0L10,5L0,10z", fill: "context-stroke" }));
    defs.appendChild(mk); svg.appendChild(defs);
    svg.appendChild(sv("text", { x: L.TIME_X, y: 16, class: "lad-h" }, "time (s)"));
    svg.appendChild(sv("text", { x: L.FRAME_X, y: 16, "text-anchor": "end", class: "lad-h" }, "frame"));
    svg.appendChild(sv("text", { x: L.CLIENT_X, y: 16, "text-anchor": "middle", class: "lad-h lad-ep" }, client));
    svg.appendChild(sv("text", { x: L.SERVER_X, y: 16, "text-anchor": "middle", class: "lad-h lad-ep" }, server));
    svg.appendChild(sv("text", { x: L.CLIENT_X - 8, y: 40, "text-anchor": "end", class: "lad-st" }, cStart));
    svg.appendChild(sv("text", { x: L.SERVER_X + 8, y: 40, class: "lad-st" }, sStart));
    const bottom = L.HEAD + L.ROW * rows.length;
    for (const x of [L.CLIENT_X, L.SERVER_X])
      svg.appendChild(sv("line", { x1: x, y1: 24, x2: x, y2: bottom + 6, stroke: "#888", "stroke-width": 2 }));
    const mid = Math.floor((L.CLIENT_X + L.SERVER_X) / 2);
    rows.forEach((r, k) => {
      const [kind, rel, frame, toServer, label, cst, sst, flagged] = r;
      const y = L.HEAD + L.ROW * k;
      if (kind === 1 || kind === 2) {
        svg.appendChild(sv("text", { x: mid, y: y + 17, "text-anchor": "middle", class: "lad-fold", fill: "#666", "font-style": "italic" }, label));
        return;
      }
      if (kind === 3) {
        const g = sv("g", { class: "lad-timer" });
        g.appendChild(sv("text", { x: L.TIME_X, y: y + 17 }, rel.toFixed(6)));
        g.appendChild(sv("text", { x: mid, y: y + 17, "text-anchor": "middle", fill: "#555" }, label));
        svg.appendChild(g);
        return;
      }
      const hot = !!flagged;
      const rst = label.split("Seq=")[0].includes("RST");
      const colour = rst ? "#c62828" : (toServer ? "#1565c0" : "#2e7d32");
      const [x1, x2] = toServer ? [L.CLIENT_X, L.SERVER_X] : [L.SERVER_X, L.CLIENT_X];
      const g = sv("g", { class: hot ? "lad-pkt lad-hot" : "lad-pkt", "data-frame": frame });
      if (hot) g.appendChild(sv("rect", { x: L.TIME_X - 4, y: y + 2, width: L.WIDTH - 2 * L.TIME_X + 8, height: L.ROW - 2, fill: "#fff3c4", rx: 3 }));
      g.appendChild(sv("text", { x: L.TIME_X, y: y + 17 }, rel.toFixed(6)));
      g.appendChild(sv("text", { x: L.FRAME_X, y: y + 17, "text-anchor": "end" }, frame));
      g.appendChild(sv("line", { x1: x1, y1: y + 16, x2: x2, y2: y + 22, stroke: colour, "stroke-width": hot ? 2.2 : 1.4, "marker-end": "url(#lad-arr-js)" }));
      const lt = sv("text", { x: mid, y: y + 12, "text-anchor": "middle", fill: colour, "font-size": 11 }, label);
      if (hot) lt.setAttribute("font-weight", "bold");
      g.appendChild(lt);
      if (cst) g.appendChild(sv("text", { x: L.CLIENT_X - 8, y: y + 17, "text-anchor": "end", class: "lad-st", "font-weight": "bold" }, cst));
      if (sst) g.appendChild(sv("text", { x: L.SERVER_X + 8, y: y + 17, class: "lad-st", "font-weight": "bold" }, sst));
      svg.appendChild(g);
    });
    svg.appendChild(sv("text", { x: L.TIME_X, y: bottom + 24, class: "lad-final" },
      `final states at end of capture: client ${cFinal}, server ${sFinal}`));
    return svg;
  }

  // ---- charts ----
  function charts() {
    if (typeof Plotly === "undefined") return;
    const C = DATA.charts;
    const cfg = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["sendDataToCloud"] };
    const base = (title, xt, yt) => ({ title: { text: title, font: { size: 14 } }, margin: { l: 55, r: 15, t: 40, b: 45 },
      xaxis: { title: { text: xt } }, yaxis: { title: { text: yt }, rangemode: "tozero" }, legend: { orientation: "h", y: -0.25 }, showlegend: true, height: 330 });
    for (const side of ["client", "server"]) {
      const s = C.states[side];
      const traces = Object.keys(s).map((k) => ({ x: C.t, y: s[k], name: k, type: "scatter", mode: "lines", line: { shape: "hv", width: 1.8 } }));
      const lay = base(`${side} sockets per state`, "time since capture start (s)", "sockets");
      if (!traces.length) lay.annotations = [{ text: "no socket of this side left CLOSED", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }];
      Plotly.newPlot(`chart-states-${side}`, traces, lay, cfg);
    }
    const ev = Object.keys(C.events).map((k) => ({ x: C.t, y: C.events[k], name: k, type: "bar" }));
    const el2 = base(`events per ${fmtS(C.bin_s)}`, "time since capture start (s)", "events");
    el2.barmode = "stack";
    Plotly.newPlot("chart-events", ev, el2, cfg);
    if (C.idle) {
      const lay = base(`idle time before the server's FIN (n=${C.idle.n})`, "idle (s)", "connections");
      lay.shapes = C.idle.marks.map((m) => ({ type: "line", x0: m.median_s, x1: m.median_s, yref: "paper", y0: 0, y1: 1, line: { color: "#c62828", dash: "dash" } }));
      lay.annotations = C.idle.marks.map((m, i) => ({ x: m.median_s, yref: "paper", y: 1 - 0.08 * i, text: `idle timeout ≈ ${m.median_s.toFixed(2)} s (${m.server})`, showarrow: false, xanchor: "left", font: { color: "#c62828" } }));
      Plotly.newPlot("chart-idle", [{ x: C.idle.x, y: C.idle.y, type: "bar", width: C.idle.width, name: "connections", marker: { color: "#5c6bc0" } }], lay, cfg);
    } else {
      noData("chart-idle", "idle time before the server's FIN: no connection the server closed after idling");
    }
    if (C.rtt) {
      const e = C.rtt.edges, x = [], w = [];
      for (let i = 0; i + 1 < e.length; i++) { x.push(Math.sqrt(e[i] * e[i + 1])); w.push(e[i + 1] - e[i]); }
      const lay = base(`handshake RTT (n=${C.rtt.n}, median ${C.rtt.median_ms.toFixed(3)} ms, p99 ${C.rtt.p99_ms.toFixed(3)} ms)`, "round trip (ms, log scale)", "connections");
      lay.xaxis.type = "log";
      Plotly.newPlot("chart-rtt", [{ x: x, y: C.rtt.y, type: "bar", name: "connections", marker: { color: "#26a69a" } }], lay, cfg);
    } else {
      noData("chart-rtt", "handshake RTT: no complete handshake in the capture");
    }
  }
  function noData(id, text) { const d = document.getElementById(id); d.appendChild(el("p", { class: "dim", style: "padding:12px" }, text)); }
  function fmtS(s) { return s < 1e-3 ? `${(s * 1e6).toFixed(0)} µs` : s < 1 ? `${(s * 1e3).toFixed(1)} ms` : `${s.toFixed(2)} s`; }

  // ---- connection table ----
  function cumsum(a) { const o = new Array(a.length); let s = 0; for (let i = 0; i < a.length; i++) { s += a[i]; o[i] = s; } return o; }
  const rows = [];
  DATA.points.forEach((p, pi) => {
    if (!p.n) return;
    const stream = cumsum(p.stream), start = cumsum(p.start_us);
    for (let i = 0; i < p.n; i++) rows.push({ p: pi, i: i, stream: stream[i], start: start[i] });
  });
  const P = DATA.points;
  const addr = (r, which) => { const p = P[r.p]; return which === "c" ? `${p.addrs[p.client[r.i]]}:${p.cport[r.i]}` : `${p.addrs[p.server[r.i]]}:${p.sport[r.i]}`; };
  const kindsOf = (r) => { const m = P[r.p].kinds[r.i]; const out = []; for (let k = 0; k < DATA.kinds.length && k < 52; k++) if (Math.floor(m / 2 ** k) % 2) out.push(DATA.kinds[k]); return out; };
  const value = {
    stream: (r) => r.p * 1e12 + r.stream, client: (r) => addr(r, "c"), server: (r) => addr(r, "s"), start: (r) => r.start,
    dur: (r) => P[r.p].dur_us[r.i], pkts: (r) => P[r.p].pkts_c[r.i] + P[r.p].pkts_s[r.i], bytes: (r) => P[r.p].bytes_c[r.i] + P[r.p].bytes_s[r.i],
    ending: (r) => DATA.endings[P[r.p].ending[r.i]], final_c: (r) => DATA.states[P[r.p].final_c[r.i]], final_s: (r) => DATA.states[P[r.p].final_s[r.i]],
    kinds: (r) => kindsOf(r).join(" "),
  };
  let view = rows, page = 0, sortCol = "stream", sortDir = 1, openKey = null;
  const tbody = document.querySelector("#conn-table tbody");
  const multi = P.filter((p) => p.n).length > 1;

  function render() {
    tbody.textContent = "";
    const pages = Math.max(1, Math.ceil(view.length / PAGE));
    page = Math.min(page, pages - 1);
    for (const r of view.slice(page * PAGE, page * PAGE + PAGE)) {
      const p = P[r.p];
      const key = `${r.p}:${r.stream}`;
      const tr = el("tr", { class: "conn", "data-key": key, "data-stream": r.stream });
      const kinds = kindsOf(r);
      if (kinds.length) tr.classList.add("has-finding");
      const cells = [multi ? `${r.stream} @${p.name}` : r.stream, addr(r, "c"), addr(r, "s"), (r.start / 1e6).toFixed(6), (p.dur_us[r.i] / 1e6).toFixed(6),
        `${p.pkts_c[r.i]}/${p.pkts_s[r.i]}`, `${p.bytes_c[r.i]}/${p.bytes_s[r.i]}`, DATA.endings[p.ending[r.i]],
        DATA.states[p.final_c[r.i]], DATA.states[p.final_s[r.i]], kinds.join(", ")];
      cells.forEach((c, k) => tr.appendChild(el("td", k === 0 || k === 3 || k === 4 ? { class: "num" } : {}, c)));
      tr.addEventListener("click", () => { openKey = openKey === key ? null : key; render(); });
      tbody.appendChild(tr);
      if (openKey === key) {
        const lt = el("tr", { class: "ladder-row" });
        const td = el("td", { colspan: 11, class: "ladder-cell" });
        const lad = DATA.ladders[key];
        if (lad) {
          const wrap = el("div", { class: "ladder-wrap" });
          wrap.appendChild(drawLadder(lad));
          td.appendChild(wrap);
        } else {
          td.appendChild(el("p", { class: "dim" }, `This connection's ladder is not embedded (the report samples ladders of large captures). Draw it with: tcpwhy flow ${p.files ? p.files[0] : "FILE"} ${r.stream} --format svg -o stream-${r.stream}.svg`));
        }
        lt.appendChild(td);
        tbody.appendChild(lt);
      }
    }
    document.getElementById("conn-count").textContent = `${view.length.toLocaleString()} of ${rows.length.toLocaleString()} connections` +
      (DATA.listed < DATA.connections ? ` listed, of the capture's ${DATA.connections.toLocaleString()} (the findings' first, then the earliest; tcpwhy conns FILE lists every one)` : "");
    document.getElementById("conn-page").textContent = `page ${page + 1} of ${pages}`;
    document.querySelectorAll("#conn-table th").forEach((th) => {
      th.classList.toggle("sorted-asc", th.dataset.col === sortCol && sortDir > 0);
      th.classList.toggle("sorted-desc", th.dataset.col === sortCol && sortDir < 0);
    });
  }
  function apply() {
    const q = document.getElementById("conn-filter").value.trim().toLowerCase();
    const ending = document.getElementById("conn-ending").value;
    const kind = document.getElementById("conn-kind").value;
    view = rows.filter((r) => {
      const p = P[r.p];
      if (ending !== "" && p.ending[r.i] !== Number(ending)) return false;
      if (kind !== "" && !(Math.floor(p.kinds[r.i] / 2 ** Number(kind)) % 2)) return false;
      if (!q) return true;
      const text = `${r.stream} ${addr(r, "c")} ${addr(r, "s")} ${DATA.endings[p.ending[r.i]]} ${DATA.states[p.final_c[r.i]]} ${DATA.states[p.final_s[r.i]]} ${kindsOf(r).join(" ")}`.toLowerCase();
      return q.split(/\s+/).every((w) => text.includes(w));
    });
    sortView();
    page = 0;
    render();
  }
  function sortView() {
    const f = value[sortCol];
    const keyed = view.map((r) => [f(r), r]);
    keyed.sort((a, b) => (a[0] < b[0] ? -sortDir : a[0] > b[0] ? sortDir : 0));
    view = keyed.map((x) => x[1]);
  }
  function table() {
    const se = document.getElementById("conn-ending");
    DATA.endings.forEach((e, k) => se.appendChild(el("option", { value: k }, e)));
    const sk = document.getElementById("conn-kind");
    DATA.kinds.forEach((e, k) => { if (k < 52) sk.appendChild(el("option", { value: k }, e)); });
    document.getElementById("conn-filter").addEventListener("input", apply);
    se.addEventListener("change", apply);
    sk.addEventListener("change", apply);
    document.getElementById("conn-prev").addEventListener("click", () => { page = Math.max(0, page - 1); render(); });
    document.getElementById("conn-next").addEventListener("click", () => { page += 1; render(); });
    document.querySelectorAll("#conn-table th").forEach((th) => th.addEventListener("click", () => {
      if (sortCol === th.dataset.col) sortDir = -sortDir; else { sortCol = th.dataset.col; sortDir = 1; }
      sortView(); page = 0; render();
    }));
    const n = DATA.ladders_embedded;
    document.getElementById("sample-note").textContent = n >= DATA.connections
      ? `Click a row to draw its ladder (all ${n.toLocaleString()} connections' ladders are embedded).`
      : `Click a row to draw its ladder. Ladders are embedded for ${n.toLocaleString()} of ${DATA.connections.toLocaleString()} connections (sampled: the findings' connections first, then the earliest; connections of more than 400 packets are left out); draw any other with tcpwhy flow FILE STREAM --format svg.`;
    render();
  }
  table();
  charts();
  document.body.dataset.ready = "1";
})();
