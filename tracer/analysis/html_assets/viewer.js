/* wstrace view — renders the embedded trace model (see tracer/analysis/view_model.py).
 *
 * Rules this script keeps: trace strings reach the page only as text nodes (never innerHTML),
 * control and bidi characters are shown as visible escapes, nothing is fetched.
 */
(function () {
  "use strict";
  const T_START = performance.now();
  const DATA = JSON.parse(document.getElementById("wstrace-data").textContent);
  const T_PARSED = performance.now();
  const S = DATA.s;
  const P = DATA.p;
  const CONNS = DATA.conns;
  // Span array positions (view_model.SPAN_*).
  const NAME = 0,
    PARENT = 1,
    START = 2,
    DUR = 3,
    PAIRS = 4,
    SID = 5,
    STATUS = 6,
    SMSG = 7,
    EVENTS = 8,
    KIND = 9,
    TRACE = 10;
  // Frame array positions: [time, conn, span, event, direction, message conn, message span].
  const F_T = 0,
    F_C = 1,
    F_S = 2,
    F_E = 3,
    F_DIR = 4,
    F_MC = 5,
    F_MS = 6;
  const K_STR = 0,
    K_NUM = 1,
    K_BOOL = 2,
    K_JSON = 3,
    K_BYTES = 4,
    K_TEXT = 5;
  const ROW_H = 24;
  const KINDS = ["unspecified", "internal", "server", "client", "producer", "consumer"];
  const STATUS_NAMES = ["unset", "ok", "error"];

  // --- Safe text -------------------------------------------------------------------------
  // Control characters (C0, DEL, C1), lone surrogates, line/paragraph separators and bidi
  // overrides are replaced by a visible escape such as \x1b, as the terminal views do.
  const UNSAFE =
    /[\u0000-\u001f\u007f-\u009f\u061c\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]|[\ud800-\udbff](?![\udc00-\udfff])|(?:^|[^\ud800-\udbff])[\udc00-\udfff]/;
  function escapeChar(ch) {
    const code = ch.charCodeAt(0);
    const hex = code.toString(16);
    return code < 0x100 ? "\\x" + hex.padStart(2, "0") : "\\u" + hex.padStart(4, "0");
  }
  function isUnsafeCode(code, text, i) {
    if (code < 0x20 || (code >= 0x7f && code <= 0x9f)) return true;
    if (code === 0x061c || code === 0x200b || code === 0x200e || code === 0x200f) return true;
    if (code === 0x2028 || code === 0x2029 || code === 0xfeff) return true;
    if (code >= 0x202a && code <= 0x202e) return true;
    if (code >= 0x2066 && code <= 0x2069) return true;
    if (code >= 0xd800 && code <= 0xdbff) {
      const next = text.charCodeAt(i + 1);
      return !(next >= 0xdc00 && next <= 0xdfff);
    }
    if (code >= 0xdc00 && code <= 0xdfff) {
      const prev = text.charCodeAt(i - 1);
      return !(prev >= 0xd800 && prev <= 0xdbff);
    }
    return false;
  }
  /** Append `text` to `node` as text; unsafe characters become highlighted escapes. */
  function put(node, text) {
    text = String(text);
    if (!UNSAFE.test(text)) {
      node.appendChild(document.createTextNode(text));
      return node;
    }
    let run = "";
    for (let i = 0; i < text.length; i++) {
      const code = text.charCodeAt(i);
      if (isUnsafeCode(code, text, i)) {
        if (run) node.appendChild(document.createTextNode(run));
        run = "";
        const mark = document.createElement("span");
        mark.className = "ctl";
        mark.textContent = escapeChar(text[i]);
        node.appendChild(mark);
      } else {
        run += text[i];
      }
    }
    if (run) node.appendChild(document.createTextNode(run));
    return node;
  }
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) put(node, text);
    return node;
  }
  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }
  const SVG_NS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const k in attrs) node.setAttribute(k, String(attrs[k]));
    return node;
  }

  // --- Values ----------------------------------------------------------------------------
  function dur(ns) {
    if (ns === null || ns === undefined || !isFinite(ns)) return "–";
    const a = Math.abs(ns);
    if (a < 1e3) return ns.toFixed(0) + " ns";
    if (a < 1e6) return (ns / 1e3).toFixed(1) + " µs";
    if (a < 1e9) return (ns / 1e6).toFixed(3) + " ms";
    return (ns / 1e9).toFixed(3) + " s";
  }
  function ms(ns) {
    return ns === null || ns === undefined ? "–" : (ns / 1e6).toFixed(3);
  }
  function pairKey(i) {
    return S[P[i][0]];
  }
  function pairValue(i) {
    const p = P[i];
    switch (p[1]) {
      case K_STR:
      case K_BYTES:
      case K_TEXT:
        return S[p[2]];
      case K_NUM:
        return p[2];
      case K_BOOL:
        return p[2] === 1;
      case K_JSON:
        return p[2];
      default:
        return null;
    }
  }
  function showValue(i) {
    const p = P[i];
    if (p[1] === K_JSON) return JSON.stringify(p[2]);
    if (p[1] === K_BYTES) return "0x" + S[p[2]];
    if (p[1] === 6) return "null";
    return String(pairValue(i));
  }
  function attrs(pairs) {
    const out = Object.create(null);
    for (const i of pairs) out[pairKey(i)] = pairValue(i);
    return out;
  }
  const attrCache = new Map();
  function spanAttrs(c, s) {
    const key = c * 1e7 + s;
    let a = attrCache.get(key);
    if (!a) {
      a = attrs(CONNS[c].spans[s][PAIRS]);
      attrCache.set(key, a);
    }
    return a;
  }
  function spanName(c, s) {
    return S[CONNS[c].spans[s][NAME]];
  }
  function connLabel(c) {
    const conn = CONNS[c];
    return "conn " + conn.n + " " + S[conn.peer] + " " + S[conn.path];
  }
  function shortPath(path) {
    for (const marker of ["site-packages/", "dist-packages/"]) {
      const i = path.lastIndexOf(marker);
      if (i >= 0) return path.slice(i + marker.length);
    }
    return path;
  }
  function isFrameName(n) {
    return n === "ws.frame.receive" || n === "ws.frame.send";
  }
  function frameAttrs(f) {
    const span = CONNS[f[F_C]].spans[f[F_S]];
    return f[F_E] >= 0 ? attrs(span[EVENTS][f[F_E]][2]) : spanAttrs(f[F_C], f[F_S]);
  }

  // --- State -----------------------------------------------------------------------------
  const state = {
    tab: "conns",
    conn: CONNS.length ? 0 : -1,
    sub: "waterfall",
    sel: null, // {c, s, frame}
    sort: { key: "n", dir: 1 },
    filter: { text: "", errors: false, incomplete: false, code: "" },
    view: null, // [from, to] ns within the connection
    collapsed: null, // span indexes folded in the waterfall (set per connection)
    chainOpen: new Map(),
    frameRows: false,
    stackOrder: "inner",
  };
  let visibleConns = [];

  // --- Shell -----------------------------------------------------------------------------
  const app = document.getElementById("app");
  function renderShell() {
    clear(app);
    const head = el("header", "top");
    const h1 = el("h1");
    h1.appendChild(el("span", null, "wstrace"));
    put(h1, " view");
    head.appendChild(h1);
    const chips = el("div", "chips");
    const errors = CONNS.filter((c) => c.err > 0).length;
    const incomplete = CONNS.filter((c) => c.inc.length > 0).length;
    chips.appendChild(el("span", "chip", CONNS.length + " connections"));
    chips.appendChild(el("span", "chip", DATA.spans + " spans"));
    if (errors) chips.appendChild(el("span", "chip bad", errors + " with errors"));
    if (incomplete) chips.appendChild(el("span", "chip warn", incomplete + " incomplete"));
    if (DATA.unattached) {
      chips.appendChild(el("span", "chip warn", DATA.unattached + " traces outside connections"));
    }
    head.appendChild(chips);
    const src = el("div", "sources", DATA.sources.map((p) => p.split(/[\\/]/).pop()).join(", "));
    src.title = DATA.sources.join("\n");
    head.appendChild(src);
    app.appendChild(head);
    const nav = el("nav", "tabs");
    const tabs = [
      ["conns", "Connections"],
      ["latency", "Latency"],
    ];
    for (const t of DATA.tabs || []) tabs.push(["x:" + t.id, t.title]);
    for (const [id, title] of tabs) {
      const b = el("button", state.tab === id ? "on" : "", title);
      b.dataset.tab = id;
      b.addEventListener("click", () => {
        state.tab = id;
        renderShell();
      });
      nav.appendChild(b);
    }
    app.appendChild(nav);
    const main = el("main");
    main.id = "main";
    app.appendChild(main);
    for (const section of document.querySelectorAll("section.extra-tab")) section.hidden = true;
    if (state.tab === "conns") renderConnections(main);
    else if (state.tab === "latency") renderLatency(main);
    else {
      main.hidden = true;
      const section = document.getElementById("tab-" + state.tab.slice(2));
      if (section) section.hidden = false;
    }
  }

  // --- Connections table -----------------------------------------------------------------
  const COLUMNS = [
    ["n", "#", "num"],
    ["peer", "client", ""],
    ["path", "path", ""],
    ["impl", "HTTP × WS", ""],
    ["d", "duration", "num"],
    ["hs", "handshake", "num"],
    ["in", "in", "num"],
    ["out", "out", "num"],
    ["cc", "close", ""],
    ["marks", "marks", ""],
  ];
  function sortValue(c, key) {
    const conn = CONNS[c];
    switch (key) {
      case "peer":
        return S[conn.peer];
      case "path":
        return S[conn.path];
      case "impl":
        return S[conn.http] + " " + S[conn.ws];
      case "hs":
        return conn.hs === null ? -1 : conn.hs;
      case "cc":
        return conn.cc === null ? -1 : conn.cc;
      case "marks":
        return conn.err * 1000 + conn.inc.length + (conn.st === 101 ? 0 : 1);
      default:
        return conn[key];
    }
  }
  function applyFilter() {
    const f = state.filter;
    const text = f.text.toLowerCase();
    const out = [];
    for (let c = 0; c < CONNS.length; c++) {
      const conn = CONNS[c];
      if (f.errors && conn.err === 0 && (conn.st === 101 || conn.st === null)) continue;
      if (f.incomplete && conn.inc.length === 0) continue;
      if (f.code !== "" && String(conn.cc) !== f.code) continue;
      if (
        text &&
        !(S[conn.path] + " " + S[conn.peer] + " " + conn.n).toLowerCase().includes(text)
      ) {
        continue;
      }
      out.push(c);
    }
    const { key, dir } = state.sort;
    out.sort((a, b) => {
      const x = sortValue(a, key),
        y = sortValue(b, key);
      return (x < y ? -1 : x > y ? 1 : a - b) * dir;
    });
    visibleConns = out;
  }

  function renderConnections(main) {
    const panel = el("div", "panel ctable");
    const bar = el("div", "toolbar");
    const search = el("input");
    search.type = "search";
    search.placeholder = "filter by path, client or #";
    search.value = state.filter.text;
    search.id = "filter-text";
    bar.appendChild(search);
    const errLabel = el("label");
    const errBox = el("input");
    errBox.type = "checkbox";
    errBox.checked = state.filter.errors;
    errBox.id = "filter-errors";
    errLabel.appendChild(errBox);
    put(errLabel, "errors / refused");
    bar.appendChild(errLabel);
    const incLabel = el("label");
    const incBox = el("input");
    incBox.type = "checkbox";
    incBox.checked = state.filter.incomplete;
    incBox.id = "filter-incomplete";
    incLabel.appendChild(incBox);
    put(incLabel, "incomplete");
    bar.appendChild(incLabel);
    const codeLabel = el("label", null, "close code");
    const codeSel = el("select");
    codeSel.id = "filter-code";
    codeSel.appendChild(new Option("any", ""));
    const codes = [...new Set(CONNS.map((c) => String(c.cc)))].sort();
    for (const code of codes)
      codeSel.appendChild(new Option(code === "null" ? "none" : code, code));
    codeSel.value = state.filter.code;
    codeLabel.appendChild(codeSel);
    bar.appendChild(codeLabel);
    const slow = el("button", null, "slowest handshakes");
    slow.addEventListener("click", () => {
      state.sort = { key: "hs", dir: -1 };
      refreshTable();
    });
    bar.appendChild(slow);
    bar.appendChild(el("span", "grow"));
    const count = el("span", "muted");
    count.id = "conn-count";
    bar.appendChild(count);
    panel.appendChild(bar);
    const head = el("div", "crow head");
    for (const [key, title, cls] of COLUMNS) {
      const cell = el("div", cls, title);
      cell.dataset.key = key;
      cell.addEventListener("click", () => {
        state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : key === "n" ? 1 : -1 };
        refreshTable();
      });
      head.appendChild(cell);
    }
    panel.appendChild(head);
    const scroller = el("div", "cscroll");
    scroller.id = "conn-scroll";
    const spacer = el("div");
    spacer.style.position = "relative";
    scroller.appendChild(spacer);
    panel.appendChild(scroller);
    main.appendChild(panel);
    const detail = el("div", "split");
    detail.id = "conn-detail";
    main.appendChild(detail);

    function refreshTable() {
      applyFilter();
      for (const cell of head.children) {
        const on = cell.dataset.key === state.sort.key;
        cell.classList.toggle("sorted", on);
        cell.title = on ? (state.sort.dir > 0 ? "ascending" : "descending") : "sort";
      }
      count.textContent = visibleConns.length + " of " + CONNS.length + " connections";
      spacer.style.height = visibleConns.length * ROW_H + "px";
      scroller.style.height = Math.max(2, Math.min(visibleConns.length, 9)) * ROW_H + 2 + "px";
      drawRows();
    }
    function drawRows() {
      clear(spacer);
      const first = Math.max(0, Math.floor(scroller.scrollTop / ROW_H) - 5);
      const last = Math.min(visibleConns.length, first + 9 + 10);
      for (let i = first; i < last; i++) spacer.appendChild(connRow(visibleConns[i], i));
    }
    search.addEventListener("input", () => {
      state.filter.text = search.value;
      refreshTable();
    });
    errBox.addEventListener("change", () => {
      state.filter.errors = errBox.checked;
      refreshTable();
    });
    incBox.addEventListener("change", () => {
      state.filter.incomplete = incBox.checked;
      refreshTable();
    });
    codeSel.addEventListener("change", () => {
      state.filter.code = codeSel.value;
      refreshTable();
    });
    scroller.addEventListener("scroll", drawRows, { passive: true });
    spacer.addEventListener("click", (ev) => {
      const row = ev.target.closest(".crow");
      if (!row) return;
      selectConnection(Number(row.dataset.conn));
      drawRows();
    });
    state.redrawTable = drawRows;
    refreshTable();
    renderConnection(detail);
  }

  function connRow(c, i) {
    const conn = CONNS[c];
    const row = el("div", "crow" + (c === state.conn ? " sel" : ""));
    row.dataset.conn = String(c);
    row.style.position = "absolute";
    row.style.left = "0";
    row.style.right = "0";
    row.style.top = i * ROW_H + "px";
    row.appendChild(el("div", "num", conn.n));
    row.appendChild(el("div", "mono", S[conn.peer]));
    row.appendChild(el("div", "mono path", S[conn.path]));
    row.appendChild(el("div", null, S[conn.http] + " × " + S[conn.ws]));
    row.appendChild(el("div", "num", dur(conn.d)));
    row.appendChild(el("div", "num", conn.hs === null ? "–" : dur(conn.hs)));
    row.appendChild(el("div", "num", conn.in));
    row.appendChild(el("div", "num", conn.out));
    const close = el("div", null, conn.cc === null ? "–" : String(conn.cc));
    if (S[conn.ci]) put(close, " by " + S[conn.ci]);
    row.appendChild(close);
    row.appendChild(marks(conn));
    return row;
  }
  function marks(conn) {
    const cell = el("div", "marks");
    if (conn.st !== null && conn.st !== 101)
      cell.appendChild(el("span", "badge err", "HTTP " + conn.st));
    if (conn.err)
      cell.appendChild(el("span", "badge err", conn.err + " error" + (conn.err > 1 ? "s" : "")));
    if (conn.inc.length) cell.appendChild(el("span", "badge inc", "incomplete"));
    if (!cell.firstChild) cell.appendChild(el("span", "badge ok", "✓"));
    return cell;
  }
  function selectConnection(c) {
    if (c === state.conn) return;
    state.conn = c;
    state.sel = null;
    state.view = null;
    state.collapsed = defaultCollapsed(c);
    state.chainOpen = new Map();
    const detail = document.getElementById("conn-detail");
    if (detail) renderConnection(detail);
    if (state.redrawTable) state.redrawTable();
  }

  // A long connection opens with its messages folded, so its waterfall stays a few hundred rows.
  const FOLD_ABOVE = 300;
  function defaultCollapsed(c) {
    const folded = new Set();
    const spans = CONNS[c].spans;
    if (spans.length <= FOLD_ABOVE) return folded;
    spans.forEach((sp, i) => {
      const name = S[sp[NAME]];
      if (name === "ws.message.receive" || name === "ws.broadcast") folded.add(i);
    });
    return folded;
  }

  // --- One connection --------------------------------------------------------------------
  function renderConnection(detail) {
    clear(detail);
    const left = el("div", "panel");
    left.id = "conn-view";
    const right = el("div", "panel details");
    right.id = "details";
    detail.appendChild(left);
    detail.appendChild(right);
    if (state.conn < 0) {
      left.appendChild(el("div", "stack-note", "The trace holds no ws.connection span."));
      return;
    }
    const c = state.conn;
    if (!state.collapsed) state.collapsed = defaultCollapsed(c);
    const conn = CONNS[c];
    const head = el("div", "conn-head");
    head.appendChild(el("span", "title mono", connLabel(c)));
    head.appendChild(
      el(
        "span",
        "muted",
        S[conn.http] +
          " × " +
          S[conn.ws] +
          " · " +
          dur(conn.d) +
          " · " +
          conn.spans.length +
          " spans · trace " +
          conn.traces[0],
      ),
    );
    left.appendChild(head);
    if (conn.st !== null && conn.st !== 101) {
      left.appendChild(el("div", "banner err", "Upgrade refused: HTTP " + conn.st));
    }
    if (conn.err) {
      const names = conn.errs.map((i) => S[i]).join(", ");
      left.appendChild(
        el("div", "banner err", conn.err + " span(s) marked with an error: " + names),
      );
    }
    if (conn.inc.length) {
      left.appendChild(
        el("div", "banner inc", "Incomplete record: " + conn.inc.map((i) => S[i]).join("; ")),
      );
    }
    const sub = el("nav", "sub");
    for (const [id, title] of [
      ["waterfall", "Waterfall & frames"],
      ["stack", "Handshake stack"],
      ["fanout", "Fan-out"],
    ]) {
      const b = el("button", state.sub === id ? "on" : "", title);
      b.dataset.sub = id;
      b.addEventListener("click", () => {
        state.sub = id;
        renderConnection(detail);
      });
      sub.appendChild(b);
    }
    left.appendChild(sub);
    const body = el("div");
    left.appendChild(body);
    if (state.sub === "waterfall") {
      renderWaterfall(body, c);
      renderFrames(body, c);
    } else if (state.sub === "stack") renderStack(body, c);
    else renderFanout(body, c);
    renderDetails();
  }

  // --- Waterfall -------------------------------------------------------------------------
  const tree = new Map(); // conn → {kids, layers}
  function treeOf(c) {
    let t = tree.get(c);
    if (t) return t;
    const spans = CONNS[c].spans;
    const kids = spans.map(() => []);
    const roots = [];
    spans.forEach((sp, i) => (sp[PARENT] >= 0 ? kids[sp[PARENT]].push(i) : roots.push(i)));
    const layer = spans.map((sp, i) => "wstrace.asgi.layer" in spanAttrs(c, i));
    t = { kids, roots, layer };
    tree.set(c, t);
    return t;
  }
  function chainOf(c, head) {
    const t = treeOf(c);
    const layers = [head];
    for (;;) {
      const next = t.kids[layers[layers.length - 1]].find((k) => t.layer[k]);
      if (next === undefined) return layers;
      layers.push(next);
    }
  }
  function buildRows(c) {
    const t = treeOf(c);
    const spans = CONNS[c].spans;
    const rows = [];
    function child(i, depth) {
      if (!state.frameRows && isFrameName(S[spans[i][NAME]])) return;
      const p = spans[i][PARENT];
      if (t.layer[i] && !(p >= 0 && t.layer[p])) chain(i, depth);
      else span(i, depth);
    }
    function span(i, depth) {
      const shown = t.kids[i].filter((k) => state.frameRows || !isFrameName(S[spans[k][NAME]]));
      rows.push({ kind: "span", s: i, depth, kids: shown.length });
      if (!state.collapsed.has(i)) for (const k of t.kids[i]) child(k, depth + 1);
    }
    function chain(head, depth) {
      const layers = chainOf(c, head);
      const open = Math.min(state.chainOpen.get(head) || 0, layers.length);
      rows.push({ kind: "chain", s: head, depth, layers, open });
      if (state.collapsed.has(-1 - head)) return;
      for (let k = 0; k < open; k++) {
        rows.push({ kind: "span", s: layers[k], depth: depth + 1 + k, kids: 0, layer: true });
        for (const kid of t.kids[layers[k]]) if (kid !== layers[k + 1]) child(kid, depth + 2 + k);
      }
      for (let k = open; k < layers.length; k++) {
        for (const kid of t.kids[layers[k]])
          if (kid !== layers[k + 1]) child(kid, depth + 1 + open);
      }
    }
    for (const r of t.roots) child(r, 0);
    return rows;
  }
  function barClass(c, i) {
    const sp = CONNS[c].spans[i];
    const name = S[sp[NAME]];
    let cls = "bar ";
    if (name === "ws.message.receive") cls += "msg";
    else if (name === "ws.message.send") cls += "send";
    else if (name === "ws.broadcast") cls += "bcast";
    else if (isFrameName(name)) cls += "frame";
    else if (name === "ws.close") cls += "close";
    else if (name.startsWith("ws.") || name.startsWith("http.") || name === "asgi.app")
      cls += "stage";
    else cls += "asgi";
    if (sp[STATUS] === 2) cls += " err";
    return cls;
  }
  function tickLabel(t, step) {
    const units = [
      [1e9, "s"],
      [1e6, "ms"],
      [1e3, "µs"],
      [1, "ns"],
    ];
    const [size, unit] = units.find(([u]) => step >= u || u === 1);
    const digits = Math.max(0, Math.ceil(-Math.log10(step / size) - 1e-9));
    return (t / size).toFixed(digits) + " " + unit;
  }
  function niceStep(span) {
    const raw = span / 8;
    const pow = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (raw <= m * pow) return m * pow;
    return 10 * pow;
  }

  function renderWaterfall(body, c) {
    const total = Math.max(CONNS[c].d, 1);
    if (!state.view) state.view = [-total * 0.01, total * 1.01];
    const wf = el("div", "wf");
    wf.id = "waterfall";
    const draw = () => drawWaterfall(wf, c);
    body.appendChild(waterfallToolbar(c, draw, total));
    body.appendChild(wf);
    state.redraw = draw;
    draw();
    bindWaterfall(wf, c, draw);
  }

  function zoomView(factor, at) {
    const [v0, v1] = state.view;
    const center = at === undefined ? (v0 + v1) / 2 : at;
    const next = Math.max((v1 - v0) * factor, 50);
    const ratio = (center - v0) / (v1 - v0);
    state.view = [center - ratio * next, center + (1 - ratio) * next];
  }

  function waterfallToolbar(c, draw, total) {
    const bar = el("div", "toolbar");
    const button = (text, title, action) => {
      const b = el("button", null, text);
      b.title = title;
      b.addEventListener("click", () => {
        action(b);
        draw();
      });
      bar.appendChild(b);
      return b;
    };
    button("+", "zoom in", () => zoomView(0.5));
    button("−", "zoom out", () => zoomView(2));
    button("fit", "show the whole connection", () => {
      state.view = [-total * 0.01, total * 1.01];
    });
    const frames = button(
      "frame rows",
      "frames as rows of the tree as well as ticks on the lanes",
      (b) => {
        state.frameRows = !state.frameRows;
        b.classList.toggle("on", state.frameRows);
      },
    );
    frames.classList.toggle("on", state.frameRows);
    button("expand chain", "open every layer of the ASGI chain", () => {
      const t = treeOf(c);
      CONNS[c].spans.forEach((sp, i) => {
        if (t.layer[i]) state.chainOpen.set(i, 1000);
      });
    }).id = "expand-chain";
    bar.appendChild(el("span", "muted", "wheel: zoom · drag: pan · double-click: zoom to span"));
    bar.appendChild(el("span", "grow"));
    const legend = el("div", "legend");
    for (const [cls, text] of [
      ["read", "frames in"],
      ["queue", "queue wait"],
      ["handler", "handler"],
      ["asgi", "ASGI layer"],
      ["recv", "receive"],
      ["send", "send"],
    ]) {
      const item = el("span");
      item.appendChild(el("i", cls));
      put(item, text);
      legend.appendChild(item);
    }
    bar.appendChild(legend);
    return bar;
  }

  function drawWaterfall(wf, c) {
    const old = wf.querySelector(".wf-body");
    const scrollTop = old ? old.scrollTop : 0;
    clear(wf);
    const [v0, v1] = state.view;
    const span = v1 - v0;
    const pct = (t) => ((t - v0) / span) * 100 + "%";
    const width = (d) => (d / span) * 100 + "%";
    const axis = el("div", "wf-axis");
    axis.appendChild(el("div", "lab", "stage"));
    const axisTrack = el("div", "wf-track");
    const step = niceStep(span);
    for (let t = Math.ceil(v0 / step) * step; t <= v1; t += step) {
      const tick = el("div", "wf-tick");
      tick.style.left = pct(t);
      tick.appendChild(el("span", null, tickLabel(t, step)));
      axisTrack.appendChild(tick);
    }
    axis.appendChild(axisTrack);
    wf.appendChild(axis);
    const scroller = el("div", "wf-body");
    wf.appendChild(scroller);
    for (const [dir, title] of [
      [0, "← receive frames"],
      [1, "→ send frames"],
    ]) {
      scroller.appendChild(frameLane(c, dir, title, pct));
    }
    for (const r of buildRows(c)) scroller.appendChild(waterfallRow(c, r, pct, width));
    scroller.scrollTop = scrollTop;
  }

  /** Every frame that went over this connection's socket in one direction, as ticks. */
  function frameLane(c, dir, title, pct) {
    const row = el("div", "wf-row lane");
    const lab = el("div", "lab");
    lab.appendChild(el("span", "tw"));
    lab.appendChild(el("span", "nm", title));
    row.appendChild(lab);
    const track = el("div", "wf-track");
    CONNS[c].frames.forEach((f, k) => {
      if (f[F_DIR] !== dir) return;
      const a = frameAttrs(f);
      const op = a["websocket.opcode"];
      const tick = el("div", "tick " + (op >= 8 ? "ctrl" : dir ? "send" : "recv"));
      if (state.sel && state.sel.frame === k) tick.classList.add("sel");
      tick.style.left = pct(f[F_T]);
      tick.title = frameSummary(a);
      tick.dataset.frame = String(k);
      track.appendChild(tick);
    });
    row.appendChild(track);
    return row;
  }

  // Dragging pans the waterfall on screen; one pair of window listeners serves every redraw.
  let drag = null;
  window.addEventListener("mousemove", (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x;
    if (Math.abs(dx) > 3) drag.moved = true;
    if (!drag.moved || !drag.track.isConnected) return;
    const perPx = (drag.view[1] - drag.view[0]) / drag.track.getBoundingClientRect().width;
    state.view = [drag.view[0] - dx * perPx, drag.view[1] - dx * perPx];
    drag.draw();
    drag.track = document.querySelector("#waterfall .wf-axis .wf-track") || drag.track;
  });
  window.addEventListener("mouseup", () => {
    setTimeout(() => {
      drag = null;
    }, 0);
  });

  function bindWaterfall(wf, c, draw) {
    const timeAt = (ev) => {
      const box = wf.querySelector(".wf-axis .wf-track").getBoundingClientRect();
      const [v0, v1] = state.view;
      return v0 + ((ev.clientX - box.left) / box.width) * (v1 - v0);
    };
    wf.addEventListener("dblclick", (ev) => {
      const row = ev.target.closest(".wf-row");
      if (!row || row.classList.contains("lane")) return;
      const sp = CONNS[c].spans[Number(row.dataset.span)];
      const pad = Math.max(sp[DUR] * 0.1, 500);
      state.view = [sp[START] - pad, sp[START] + sp[DUR] + pad];
      draw();
    });
    wf.addEventListener(
      "wheel",
      (ev) => {
        if (!ev.target.closest(".wf-track")) return;
        ev.preventDefault();
        zoomView(ev.deltaY > 0 ? 1.25 : 0.8, timeAt(ev));
        draw();
      },
      { passive: false },
    );
    wf.addEventListener("mousedown", (ev) => {
      if (!ev.target.closest(".wf-track")) return;
      const track = wf.querySelector(".wf-axis .wf-track");
      drag = { x: ev.clientX, view: state.view.slice(), moved: false, track, draw };
    });
    wf.addEventListener("click", (ev) => {
      if (drag && drag.moved) return;
      const tick = ev.target.closest(".tick");
      if (tick) {
        selectFrame(c, Number(tick.dataset.frame));
        return;
      }
      const row = ev.target.closest(".wf-row");
      if (!row || row.classList.contains("lane")) return;
      onRowClick(c, row, ev.target.closest(".tw"), draw);
    });
  }

  function onRowClick(c, row, tw, draw) {
    const s = Number(row.dataset.span);
    if (tw && row.dataset.chain) {
      const open = state.chainOpen.get(s) || 0;
      state.chainOpen.set(s, open >= chainOf(c, s).length ? 0 : open + 1);
    } else if (tw && tw.textContent) {
      if (state.collapsed.has(s)) state.collapsed.delete(s);
      else state.collapsed.add(s);
    } else {
      state.sel = { c, s, frame: -1 };
      renderDetails();
      markFrameRows();
    }
    draw();
  }

  function waterfallRow(c, r, pct, width) {
    const sp = CONNS[c].spans[r.s];
    const name = S[sp[NAME]];
    const row = el("div", "wf-row" + (r.kind === "chain" ? " chain" : ""));
    row.dataset.span = String(r.s);
    row.dataset.name = name;
    if (r.kind === "chain") row.dataset.chain = "1";
    if (state.sel && state.sel.c === c && state.sel.s === r.s && r.kind === "span")
      row.classList.add("sel");
    const lab = el("div", "lab");
    lab.style.paddingLeft = 4 + r.depth * 12 + "px";
    let twisty = "";
    if (r.kind === "chain") twisty = r.open >= r.layers.length ? "−" : "+";
    else if (r.kids) twisty = state.collapsed.has(r.s) ? "▸" : "▾";
    const tw = el("span", "tw", twisty);
    if (r.kind === "chain") tw.title = "open the next layer (click again at the end to fold)";
    lab.appendChild(tw);
    if (r.kind === "chain") {
      const names = r.layers.map((i) => S[CONNS[c].spans[i][NAME]]);
      const text =
        "ASGI chain · " + r.layers.length + " layers: " + names.slice(r.open).join(" → ");
      lab.appendChild(
        el(
          "span",
          "nm",
          r.open >= r.layers.length ? "ASGI chain · " + r.layers.length + " layers" : text,
        ),
      );
      lab.title = names.join(" → ");
    } else {
      lab.appendChild(el("span", "nm", name));
      lab.title = name;
      if (sp[PARENT] < 0 && sp[TRACE] !== 0) {
        const linked = el("span", "linked", " ↪ linked trace");
        linked.title =
          "a trace of its own (message shape), linked to this connection: " +
          CONNS[c].traces[sp[TRACE]];
        lab.appendChild(linked);
      }
    }
    lab.appendChild(el("span", "dur", dur(sp[DUR])));
    row.appendChild(lab);
    const track = el("div", "wf-track");
    const b = el("div", r.kind === "chain" ? "bar asgi" : barClass(c, r.s));
    b.style.left = pct(sp[START]);
    b.style.width = width(sp[DUR]);
    if (name === "ws.message.receive") shadeMessage(b, c, r.s);
    if (r.kind === "chain") {
      const names = r.layers.slice(r.open).map((i) => S[CONNS[c].spans[i][NAME]]);
      b.appendChild(el("span", "txt", names.join(" → ")));
    }
    track.appendChild(b);
    for (const ev of sp[EVENTS]) {
      if (isFrameName(S[ev[0]])) continue;
      const mark = el("div", "ev");
      mark.style.left = pct(ev[1]);
      mark.title = S[ev[0]];
      track.appendChild(mark);
    }
    row.appendChild(track);
    return row;
  }
  /** A received message: frames arriving, waiting in the queue, the handler — shaded apart. */
  function shadeMessage(bar, c, s) {
    const sp = CONNS[c].spans[s];
    const a = spanAttrs(c, s);
    const total = sp[DUR];
    const delivered = a["wstrace.delivered_ns"];
    const queue = a["wstrace.queue_wait_ns"];
    const handler = a["wstrace.handler_ns"];
    if (typeof delivered !== "number" || total <= 0) return;
    const q = typeof queue === "number" ? queue : 0;
    const h = typeof handler === "number" ? handler : total - delivered;
    const parts = [
      ["read", 0, delivered - q],
      ["queue", delivered - q, q],
      ["handler", delivered, h],
    ];
    bar.style.background = "none";
    for (const [cls, from, len] of parts) {
      if (len <= 0) continue;
      const seg = el("div", "seg " + cls);
      seg.style.left = (from / total) * 100 + "%";
      seg.style.width = Math.min(len / total, 1) * 100 + "%";
      bar.appendChild(seg);
    }
    bar.title =
      "frames in " + dur(delivered - q) + " · queue wait " + dur(q) + " · handler " + dur(h);
  }

  // --- Frames ----------------------------------------------------------------------------
  function frameSummary(a) {
    const parts = [];
    if ("websocket.fin" in a) parts.push("FIN=" + (a["websocket.fin"] ? 1 : 0));
    if (a["websocket.opcode.name"] !== undefined) parts.push(a["websocket.opcode.name"]);
    if ("websocket.payload_length" in a) parts.push("len=" + a["websocket.payload_length"]);
    return parts.join(" ");
  }
  function renderFrames(body, c) {
    const conn = CONNS[c];
    const panel = el("div");
    const h = el("div", "toolbar");
    h.appendChild(el("strong", null, "Frames on this connection's socket"));
    h.appendChild(
      el("span", "muted", conn.frames.length + " frames · select a row to select its span"),
    );
    panel.appendChild(h);
    const scroll = el("div", "tscroll");
    scroll.style.maxHeight = "300px";
    const table = el("table", "grid");
    table.id = "frames";
    const head = el("tr");
    for (const title of [
      "#",
      "time",
      "dir",
      "FIN",
      "RSV",
      "opcode",
      "MASK",
      "length",
      "masking key",
      "close",
      "message",
    ])
      head.appendChild(el("th", null, title));
    table.appendChild(el("thead")).appendChild(head);
    const tb = el("tbody");
    conn.frames.forEach((f, k) => {
      const a = frameAttrs(f);
      const tr = el("tr", "click " + (f[F_DIR] ? "send" : "recv"));
      tr.dataset.frame = String(k);
      const rsv = a["websocket.rsv"];
      const cells = [
        k + 1,
        "+" + dur(f[F_T]),
        f[F_DIR] ? "→ send" : "← recv",
        "websocket.fin" in a ? (a["websocket.fin"] ? "1" : "0") : "",
        rsv === undefined ? "" : ((rsv >> 2) & 1) + "" + ((rsv >> 1) & 1) + (rsv & 1),
        a["websocket.opcode"] === undefined
          ? ""
          : a["websocket.opcode"] + " " + (a["websocket.opcode.name"] || ""),
        "websocket.mask" in a ? (a["websocket.mask"] ? "1" : "0") : "",
        a["websocket.payload_length"] === undefined ? "" : a["websocket.payload_length"],
        a["websocket.masking_key"] === undefined ? "" : a["websocket.masking_key"],
        closeText(a),
        messageText(f, c),
      ];
      cells.forEach((v, i) => tr.appendChild(el("td", i >= 3 && i <= 8 ? "mono" : "", v)));
      tb.appendChild(tr);
    });
    table.appendChild(tb);
    tb.addEventListener("click", (ev) => {
      const tr = ev.target.closest("tr");
      if (tr) selectFrame(c, Number(tr.dataset.frame));
    });
    scroll.appendChild(table);
    panel.appendChild(scroll);
    body.appendChild(panel);
    markFrameRows();
  }
  function closeText(a) {
    if (a["websocket.close.code"] === undefined && a["websocket.close.reason"] === undefined)
      return "";
    let text = String(a["websocket.close.code"] === undefined ? "" : a["websocket.close.code"]);
    if (a["websocket.close.reason"]) text += ' "' + String(a["websocket.close.reason"]) + '"';
    return text;
  }
  function messageText(f, c) {
    if (f[F_MC] < 0) return "";
    const name = spanName(f[F_MC], f[F_MS]);
    const a = spanAttrs(f[F_MC], f[F_MS]);
    let text = name.replace("ws.message.", "") + " " + (a["websocket.message.type"] || "");
    if (a["wstrace.message.index"] !== undefined) text += " #" + a["wstrace.message.index"];
    if (f[F_MC] !== c)
      text += " (from " + connLabel(f[F_MC]).split(" ").slice(0, 2).join(" ") + ")";
    return text;
  }
  function selectFrame(c, k) {
    const f = CONNS[c].frames[k];
    state.sel = { c: f[F_C], s: f[F_S], frame: k, wire: c };
    if (f[F_C] === c) revealSpan(c, f[F_S]);
    if (state.redraw) state.redraw();
    renderDetails();
    markFrameRows();
    const row = document.querySelector("#waterfall .wf-row.sel");
    if (row) row.scrollIntoView({ block: "nearest" });
  }
  /** Expand what hides a span so that its row (or its nearest visible ancestor) shows. */
  function revealSpan(c, s) {
    const spans = CONNS[c].spans;
    if (isFrameName(S[spans[s][NAME]]) && !state.frameRows) state.frameRows = true;
    for (let p = spans[s][PARENT]; p >= 0; p = spans[p][PARENT]) state.collapsed.delete(p);
  }
  function markFrameRows() {
    for (const tr of document.querySelectorAll("#frames tbody tr")) {
      tr.classList.toggle("sel", !!state.sel && state.sel.frame === Number(tr.dataset.frame));
    }
  }

  // --- Details ---------------------------------------------------------------------------
  function renderDetails() {
    const box = document.getElementById("details");
    if (!box) return;
    clear(box);
    box.appendChild(el("h2", null, "Span details"));
    if (!state.sel) {
      box.appendChild(
        el("div", "empty", "Select a span in the waterfall or a frame in the table."),
      );
      return;
    }
    const { c, s } = state.sel;
    const sp = CONNS[c].spans[s];
    const a = spanAttrs(c, s);
    const top = el("dl");
    const rows = [
      ["span", S[sp[NAME]]],
      ["connection", connLabel(c)],
      ["duration", dur(sp[DUR])],
      ["start", "+" + dur(sp[START]) + " from the connection's start"],
      ["status", STATUS_NAMES[sp[STATUS]] + (S[sp[SMSG]] ? ": " + S[sp[SMSG]] : "")],
      ["kind", KINDS[sp[KIND]] || String(sp[KIND])],
      ["span id", sp[SID]],
      ["trace id", CONNS[c].traces[sp[TRACE]]],
    ];
    if (state.sel.frame >= 0 && state.sel.wire !== undefined && state.sel.wire !== c) {
      rows.push(["on the wire of", connLabel(state.sel.wire)]);
    }
    for (const [k, v] of rows) {
      top.appendChild(el("dt", null, k));
      top.appendChild(el("dd", null, v));
    }
    box.appendChild(top);
    const fn = a["code.function.name"];
    const file = a["code.file.path"];
    box.appendChild(el("h3", null, "Code location"));
    const code = el("div", "code");
    if (fn || file) {
      if (fn) code.appendChild(el("div", "fn", fn));
      if (file) {
        const where = el(
          "div",
          "mono",
          shortPath(String(file)) +
            (a["code.line.number"] !== undefined ? ":" + a["code.line.number"] : ""),
        );
        code.appendChild(where);
        code.appendChild(el("div", "mono muted", String(file)));
        const installed = (DATA.versions || {})[String(file)];
        if (installed)
          code.appendChild(
            el("div", "muted", "in " + installed + " (installed where this page was made)"),
          );
      }
    } else code.appendChild(el("span", "muted", "no code.* attributes on this span"));
    box.appendChild(code);
    box.appendChild(el("h3", null, "Attributes (" + sp[PAIRS].length + ")"));
    const dl = el("dl");
    dl.id = "detail-attrs";
    for (const i of sp[PAIRS]) {
      dl.appendChild(el("dt", null, pairKey(i)));
      const dd = el("dd", null, showValue(i));
      if (/_ns$/.test(pairKey(i)) && P[i][1] === K_NUM)
        dd.appendChild(el("span", "muted", "  (" + dur(P[i][2]) + ")"));
      dl.appendChild(dd);
    }
    box.appendChild(dl);
    if (sp[EVENTS].length) {
      box.appendChild(el("h3", null, "Events (" + sp[EVENTS].length + ")"));
      for (const ev of sp[EVENTS]) {
        const evl = el("dl");
        evl.appendChild(el("dt", null, "event"));
        evl.appendChild(el("dd", null, S[ev[0]] + " @ +" + dur(ev[1])));
        for (const i of ev[2]) {
          evl.appendChild(el("dt", null, pairKey(i)));
          evl.appendChild(el("dd", null, showValue(i)));
        }
        box.appendChild(evl);
      }
    }
  }

  // --- Handshake stack -------------------------------------------------------------------
  function renderStack(body, c) {
    const stack = CONNS[c].stack;
    if (!stack) {
      body.appendChild(
        el(
          "div",
          "stack-note",
          "No handshake stack on this connection (no wstrace.handshake.stack event on ws.accept: " +
            "the app never accepted, or the stack was not recorded).",
        ),
      );
      return;
    }
    const bar = el("div", "toolbar");
    const inner = el("button", state.stackOrder === "inner" ? "on" : "", "innermost first");
    const outer = el("button", state.stackOrder === "outer" ? "on" : "", "outermost first");
    inner.addEventListener("click", () => {
      state.stackOrder = "inner";
      renderConnection(document.getElementById("conn-detail"));
    });
    outer.addEventListener("click", () => {
      state.stackOrder = "outer";
      renderConnection(document.getElementById("conn-detail"));
    });
    bar.appendChild(
      el("strong", null, "The live call chain when the app's accept() reached the server"),
    );
    bar.appendChild(el("span", "grow"));
    bar.appendChild(inner);
    bar.appendChild(outer);
    body.appendChild(bar);
    const rows = stack.rows.map((r, i) => [i, r]);
    if (state.stackOrder === "inner") rows.reverse();
    const table = el("table", "grid");
    table.id = "stack";
    const head = el("tr");
    for (const title of ["", "#", "function", "file:line", "package"])
      head.appendChild(el("th", null, title));
    table.appendChild(el("thead")).appendChild(head);
    const tb = el("tbody");
    let group = null;
    for (const [i, r] of rows) {
      const pkg = S[r[3]];
      const cls =
        "pkg-" +
        (/^(asyncio|python|uvicorn|websockets|wsproto|starlette|fastapi|app|wstrace|h11|httptools)$/.test(
          pkg,
        )
          ? pkg
          : "other");
      if (pkg !== group) {
        group = pkg;
        const g = el("tr", "grp " + cls);
        g.appendChild(el("td", "pkg"));
        const label = el("td", "glabel", pkg);
        label.colSpan = 4;
        g.appendChild(label);
        tb.appendChild(g);
      }
      const tr = el("tr", "frame-row " + cls);
      tr.dataset.pkg = pkg;
      tr.appendChild(el("td", "pkg"));
      tr.appendChild(el("td", "num muted", i + 1));
      tr.appendChild(el("td", "mono fn", S[r[0]]));
      tr.appendChild(el("td", "mono", S[r[1]] + (r[2] === null ? "" : ":" + r[2])));
      tr.appendChild(el("td", "muted", pkg));
      tb.appendChild(tr);
    }
    table.appendChild(tb);
    const scroll = el("div", "tscroll");
    scroll.appendChild(table);
    body.appendChild(scroll);
    body.appendChild(
      el(
        "div",
        "stack-note",
        stack.rows.length +
          " Python frames, recorded on " +
          "ws.accept; # counts from the outermost frame.",
      ),
    );
  }

  // --- Fan-out ---------------------------------------------------------------------------
  function renderFanout(body, c) {
    const fan = CONNS[c].fan;
    const box = el("div", "fan");
    box.id = "fanout";
    if (!fan.length) {
      box.appendChild(el("div", "stack-note", "No broadcast started from this connection."));
      body.appendChild(box);
      return;
    }
    const spans = CONNS[c].spans;
    box.appendChild(
      el(
        "div",
        "stack-note",
        "Each broadcast this connection's messages caused: one bar per recipient, " +
          "from the send's start to its last frame written, on an axis that starts when the message's first frame arrived. " +
          "Click a recipient to open its connection.",
      ),
    );
    for (const [b, trigger, firstIn, sends] of fan) {
      const item = el("div", "fan-item");
      const h = el("h4");
      const end = sends.reduce((m, s) => Math.max(m, s[2]), firstIn);
      const what =
        trigger >= 0
          ? "message #" + (spanAttrs(c, trigger)["wstrace.message.index"] ?? "?")
          : "broadcast (no received message)";
      h.appendChild(el("span", null, what + " → " + sends.length + " recipients"));
      h.appendChild(
        el("span", "muted", "fan-out " + dur(end - firstIn) + " (first frame in → last frame out)"),
      );
      item.appendChild(h);
      const span = Math.max(end - firstIn, 1);
      for (const [send, to, lastOut] of sends) {
        const row = el("div", "fan-row" + (to === c ? " self" : ""));
        row.dataset.conn = String(to);
        row.appendChild(el("span", "mono", to >= 0 ? connLabel(to) : "unknown recipient"));
        const track = el("div", "fan-track");
        track.appendChild(el("div", "zero"));
        const bar = el("div", "bar send");
        bar.style.top = "0";
        const s0 = spans[send][START] - firstIn;
        bar.style.left = (s0 / span) * 100 + "%";
        bar.style.width = Math.max(((lastOut - firstIn - s0) / span) * 100, 0.5) + "%";
        track.appendChild(bar);
        row.appendChild(track);
        row.appendChild(el("span", "num", dur(lastOut - firstIn)));
        row.addEventListener("click", () => {
          if (to >= 0) {
            state.sel = null;
            selectConnection(to);
          }
        });
        item.appendChild(row);
      }
      box.appendChild(item);
    }
    body.appendChild(box);
  }

  // --- Latency ---------------------------------------------------------------------------
  function renderLatency(main) {
    const lat = DATA.latency;
    const panel = el("div", "panel lat");
    panel.appendChild(
      el(
        "h2",
        null,
        "Latency per stage across " +
          CONNS.length +
          " connections (" +
          lat.method +
          " percentiles, ms)",
      ),
    );
    const table = el("table", "grid");
    table.id = "latency";
    const head = el("tr");
    for (const t of ["stage", "count", "p50", "p90", "p99", "max"])
      head.appendChild(el("th", null, t));
    const axisHead = el("th", null, "distribution (log scale)");
    const axis = el("div", "axis");
    const per = lat.hist.per_decade,
      binW = 340 / lat.hist.bins;
    ["100 ns", "1 µs", "10 µs", "100 µs", "1 ms", "10 ms", "100 ms", "1 s", "10 s"].forEach(
      (label, d) => {
        if (d === 0) return;
        const mark = el("span", null, label);
        mark.style.left = d * per * binW + "px";
        axis.appendChild(mark);
      },
    );
    axisHead.appendChild(axis);
    head.appendChild(axisHead);
    table.appendChild(el("thead")).appendChild(head);
    const tb = el("tbody");
    for (const row of lat.stages) tb.appendChild(latencyRow(row, ""));
    for (const row of lat.derived) tb.appendChild(latencyRow(row, "derived"));
    table.appendChild(tb);
    panel.appendChild(table);
    panel.appendChild(
      el(
        "div",
        "stack-note",
        "fan-out: the triggering message's first frame in → the last recipient's frame out. queue wait / handler: of each received message. Lines on the plots: p50 (solid), p99 (dashed)." +
          (lat.untriggered
            ? " " +
              lat.untriggered +
              " broadcasts not triggered by a received message are left out of fan-out."
            : ""),
      ),
    );
    main.appendChild(panel);
  }
  function binOf(ns) {
    const h = DATA.latency.hist;
    if (ns <= h.min_ns) return 0;
    return Math.min(h.bins - 1, Math.log10(ns / h.min_ns) * h.per_decade);
  }
  function latencyRow(row, cls) {
    const tr = el("tr", cls);
    tr.appendChild(el("td", "mono", row.name));
    tr.appendChild(el("td", "num", row.count));
    for (const k of ["p50_ns", "p90_ns", "p99_ns", "max_ns"])
      tr.appendChild(el("td", "num", ms(row[k])));
    const cell = el("td", "hist");
    const W = 340,
      H = 26,
      n = row.hist.length,
      bw = W / n;
    const max = Math.max(1, ...row.hist);
    const plot = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H });
    plot.appendChild(svg("line", { x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5, stroke: "#dfe3ea" }));
    for (let d = 0; d <= 9; d++) {
      const x = d * DATA.latency.hist.per_decade * bw;
      plot.appendChild(svg("line", { x1: x, y1: 0, x2: x, y2: H, stroke: "#eef0f4" }));
    }
    row.hist.forEach((count, i) => {
      if (!count) return;
      const h = Math.max(1.5, (Math.sqrt(count) / Math.sqrt(max)) * (H - 2));
      const rect = svg("rect", { x: i * bw + 0.5, y: H - h, width: bw - 1, height: h });
      rect.appendChild(svg("title", {})).textContent = count + " values";
      plot.appendChild(rect);
    });
    for (const [k, dash] of [
      ["p50_ns", ""],
      ["p99_ns", "3,2"],
    ]) {
      if (row[k] === null) continue;
      const x = binOf(row[k]) * bw;
      plot.appendChild(
        svg("line", { x1: x, y1: 0, x2: x, y2: H, stroke: "#c9303e", "stroke-dasharray": dash }),
      );
    }
    cell.appendChild(plot);
    tr.appendChild(cell);
    return tr;
  }

  // Arrow keys move through the connection list (outside text fields).
  document.addEventListener("keydown", (ev) => {
    if (state.tab !== "conns" || ev.target.closest("input, select, textarea")) return;
    if (ev.key !== "ArrowDown" && ev.key !== "ArrowUp") return;
    const at = visibleConns.indexOf(state.conn);
    const next =
      visibleConns[
        Math.max(0, Math.min(visibleConns.length - 1, at + (ev.key === "ArrowDown" ? 1 : -1)))
      ];
    if (next === undefined) return;
    ev.preventDefault();
    selectConnection(next);
    const scroller = document.getElementById("conn-scroll");
    const top = visibleConns.indexOf(next) * ROW_H;
    if (top < scroller.scrollTop) scroller.scrollTop = top;
    if (top + ROW_H > scroller.scrollTop + scroller.clientHeight)
      scroller.scrollTop = top + ROW_H - scroller.clientHeight;
    if (state.redrawTable) state.redrawTable();
  });

  // --- Start -----------------------------------------------------------------------------
  renderShell();
  requestAnimationFrame(() => {
    setTimeout(() => {
      window.__wstraceTimings = {
        parseMs: T_PARSED - T_START,
        renderMs: performance.now() - T_PARSED,
        firstRenderMs: performance.now(),
      };
      document.body.dataset.ready = "1";
    }, 0);
  });
})();
