// The lab's dashboard: reads /lab/stats once a second and draws each service's rate over the
// last three minutes. Everything from the server is shown as text (textContent), never as HTML.
"use strict";

const KEEP = 180;            // samples kept: three minutes at one a second
const history = new Map();   // service name -> [{t, rate, errors, open, latencyUs}]
let last = null;             // the previous sample, for rates

const fmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const fmt1 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

function isEcho(name) { return name.startsWith("echo"); }

function bytesRate(bps) {
  if (bps >= 1 << 30) return fmt1.format(bps / (1 << 30)) + " GiB/s";
  if (bps >= 1 << 20) return fmt1.format(bps / (1 << 20)) + " MiB/s";
  if (bps >= 1 << 10) return fmt1.format(bps / (1 << 10)) + " KiB/s";
  return (bps < 10 ? fmt1 : fmt).format(bps) + " B/s";
}

function micros(us) {
  if (!isFinite(us)) return "–";
  if (us >= 1000) return fmt1.format(us / 1000) + " ms";
  return fmt1.format(us) + " µs";
}

function card(kind, key, parent) {
  let el = parent.querySelector(`[data-key="${CSS.escape(key)}"]`);
  if (!el) {
    el = document.getElementById(kind).content.firstElementChild.cloneNode(true);
    el.dataset.key = key;
    parent.appendChild(el);
  }
  return el;
}

function draw(canvas, points, echo) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== w * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const max = Math.max(1, ...points.map(p => p.rate));
  g.strokeStyle = "#e3e6ec";
  g.fillStyle = "#6b7385";
  g.font = "11px system-ui, sans-serif";
  for (const f of [0.5, 1]) {
    const y = h - 14 - (h - 24) * f;
    g.beginPath(); g.moveTo(0, y); g.lineTo(w, y); g.stroke();
    const v = max * f;
    g.fillText(echo ? bytesRate(v) : (v < 10 ? fmt1 : fmt).format(v) + "/s", 4, y - 2);
  }
  const step = w / (KEEP - 1);
  const x0 = w - step * (points.length - 1);
  const line = (pick, color) => {
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    points.forEach((p, i) => {
      const x = x0 + i * step, y = h - 14 - (h - 24) * (pick(p) / max);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  };
  line(p => p.rate, "#2f6fed");
  line(p => p.errors, "#d64545");
  g.fillStyle = "#6b7385";
  g.fillText("−3 min", 4, h - 2);
  g.fillText("now", w - 24, h - 2);
}

function showServices(sample) {
  const parent = document.getElementById("services");
  const dt = last ? (sample.at_ms - last.at_ms) / 1000 : 0;
  for (const s of sample.services) {
    const el = card("service-card", s.name, parent);
    el.querySelector(".name").textContent = s.name;
    el.querySelector(".addr").textContent = s.addr;
    const prev = last && last.services.find(p => p.name === s.name);
    const echo = isEcho(s.name);
    let point = { rate: 0, errors: 0 };
    if (prev && dt > 0) {
      const done = s.requests - prev.requests;
      point = {
        rate: echo ? (s.bytes_out - prev.bytes_out) / dt : done / dt,
        errors: (s.errors - prev.errors) / dt,
        latencyUs: done > 0 ? (s.service_us - prev.service_us) / done : NaN,
      };
    }
    const h = history.get(s.name) || [];
    h.push(point);
    while (h.length > KEEP) h.shift();
    history.set(s.name, h);
    el.querySelector(".rate-label").textContent = echo ? "echoed" : "requests/s";
    const rate = el.querySelector(".rate");
    rate.textContent = echo ? bytesRate(point.rate) : fmt.format(point.rate);
    rate.dataset.value = String(point.rate);
    el.querySelector(".open").textContent = fmt.format(s.open);
    const errors = el.querySelector(".errors");
    errors.textContent = fmt1.format(point.errors);
    errors.classList.toggle("bad", point.errors > 0);
    el.querySelector(".latency").textContent = micros(point.latencyUs);
    draw(el.querySelector("canvas"), h, echo);
  }
}

function rows(tbody, items, cells) {
  tbody.replaceChildren(...items.map(item => {
    const tr = document.createElement("tr");
    for (const [text, cls] of cells(item)) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    return tr;
  }));
}

function showRealms(sample) {
  const parent = document.getElementById("realms");
  for (const r of sample.realms) {
    const el = card("realm-card", r.realm, parent);
    el.querySelector(".name").textContent = "realm " + r.realm;
    el.querySelector(".users").textContent = fmt.format(r.users);
    el.querySelector(".online").textContent = fmt.format(r.online);
    el.querySelector(".groups").textContent = fmt.format(r.groups);
    el.querySelector(".failed").textContent = fmt.format(r.failed_logins);
    rows(el.querySelector(".links tbody"), r.links, l => [
      [l.realm], [l.state, l.state === "up" ? "up" : "down"], [fmt.format(l.outbox)],
    ]);
    rows(el.querySelector(".sizes tbody"), r.largest_groups, g => [
      [g.name], [fmt.format(g.members)], [fmt.format(g.live)],
    ]);
  }
}

async function tick() {
  const status = document.getElementById("status");
  try {
    const res = await fetch("/lab/stats", { cache: "no-store" });
    if (!res.ok) throw new Error(res.status);
    const sample = await res.json();
    showServices(sample);
    showRealms(sample);
    last = sample;
    status.textContent = "live";
    status.className = "status live";
  } catch (e) {
    status.textContent = "lab unreachable: retrying";
    status.className = "status down";
  }
}

tick();
setInterval(tick, 1000);
