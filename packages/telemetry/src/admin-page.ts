/**
 * The admin page: one self-contained HTML document (inline CSS and JS, no build step) that polls
 * `/clusters` and shows services, endpoints, health, breaker state, request rate and latency.
 * The script avoids template literals so that it can live in this TypeScript string as is.
 */
export const ADMIN_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>meshlet admin</title>
<style>
  :root { --bg:#0f1419; --panel:#171d24; --line:#26303b; --text:#d7dde4; --dim:#8795a5; --ok:#3fb950;
          --warn:#d29922; --bad:#f85149; --info:#58a6ff; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--text); }
  header { display:flex; align-items:center; gap:16px; padding:14px 24px; border-bottom:1px solid var(--line); background:var(--panel); }
  header h1 { font-size:18px; margin:0; letter-spacing:.3px; }
  header h1 span { color:var(--info); }
  header .meta { color:var(--dim); font-size:12px; }
  header nav { margin-left:auto; display:flex; gap:14px; font-size:13px; }
  a { color:var(--info); text-decoration:none; } a:hover { text-decoration:underline; }
  main { padding:20px 24px; display:grid; gap:18px; }
  #services { display:grid; gap:14px; }
  .summary { display:flex; gap:12px; flex-wrap:wrap; }
  .tile { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:10px 16px; min-width:150px; }
  .tile .k { color:var(--dim); font-size:12px; text-transform:uppercase; letter-spacing:.5px; }
  .tile .v { font-size:22px; font-weight:600; }
  .svc { background:var(--panel); border:1px solid var(--line); border-radius:8px; overflow:hidden; }
  .svc > .head { display:flex; flex-wrap:wrap; align-items:center; gap:10px 18px; padding:12px 16px; border-bottom:1px solid var(--line); }
  .svc .name { font-weight:600; font-size:16px; }
  .stat { color:var(--dim); font-size:12px; } .stat b { color:var(--text); font-size:14px; font-weight:600; }
  .badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; border:1px solid currentColor; }
  .healthy, .closed { color:var(--ok); } .unknown { color:var(--dim); } .degraded, .half_open, .draining { color:var(--warn); }
  .unhealthy, .ejected, .open, .panic { color:var(--bad); }
  table { width:100%; border-collapse:collapse; font-size:13px; }
  th, td { text-align:left; padding:6px 16px; border-bottom:1px solid var(--line); white-space:nowrap; }
  th { color:var(--dim); font-weight:500; font-size:12px; }
  tr:last-child td { border-bottom:none; }
  td.num, th.num { text-align:right; font-variant-numeric: tabular-nums; }
  svg.spark { vertical-align:middle; }
  .empty { color:var(--dim); padding:30px; text-align:center; }
  .err { color:var(--bad); font-size:12px; }
</style>
</head>
<body>
<header>
  <h1><span>mesh</span>let</h1>
  <div class="meta" id="meta">connecting…</div>
  <nav><a href="/metrics">/metrics</a><a href="/clusters">/clusters</a><a href="/config_dump">/config_dump</a><a href="/ready">/ready</a></nav>
</header>
<main>
  <div class="summary" id="summary"></div>
  <div id="services"><div class="empty">Loading…</div></div>
</main>
<script>
(function () {
  var params = new URLSearchParams(location.search);
  var interval = Math.max(250, Number(params.get('interval')) || 1000);
  var prev = {};
  var history = {};
  var polls = 0;
  function esc(s) { return String(s == null ? '' : s).replace(/[&<>"']/g, function (c) { return '&#' + c.charCodeAt(0) + ';'; }); }
  function fmt(n, d) { return (n == null || !isFinite(n)) ? '–' : n.toFixed(d); }
  function badge(cls, text) { return '<span class="badge ' + esc(cls) + '">' + esc(text || cls) + '</span>'; }
  function spark(points) {
    var w = 120, h = 24, max = Math.max.apply(null, points.concat([1]));
    var step = points.length > 1 ? w / (points.length - 1) : w;
    var d = points.map(function (p, i) { return (i ? 'L' : 'M') + (i * step).toFixed(1) + ' ' + (h - 2 - (p / max) * (h - 4)).toFixed(1); }).join(' ');
    return '<svg class="spark" width="' + w + '" height="' + h + '"><path d="' + d + '" fill="none" stroke="#58a6ff" stroke-width="1.5"/></svg>';
  }
  function render(data) {
    polls++;
    var t = data.time;
    var totalRate = 0, totalEps = 0, healthyEps = 0, worst = 0;
    var html = data.services.map(function (s) {
      var st = s.stats || { requests: 0, errors: 0, durationSumMs: 0, retries: 0, ejections: 0 };
      var p = prev[s.name];
      var rate = 0, lat = null, errPct = null;
      if (p && t > p.time) {
        var dn = st.requests - p.requests;
        rate = dn * 1000 / (t - p.time);
        lat = dn > 0 ? (st.durationSumMs - p.durationSumMs) / dn : null;
        errPct = dn > 0 ? 100 * (st.errors - p.errors) / dn : null;
      }
      prev[s.name] = { time: t, requests: st.requests, errors: st.errors, durationSumMs: st.durationSumMs };
      var hist = history[s.name] || (history[s.name] = []);
      hist.push(rate); if (hist.length > 60) hist.shift();
      totalRate += rate;
      var rows = s.endpoints.map(function (e) {
        totalEps++; if (e.state === 'healthy' || e.state === 'unknown') healthyEps++;
        return '<tr><td>' + esc(e.id) + '</td><td>' + badge(e.state) + '</td><td>' + esc(e.zone || '–') +
          '</td><td class="num">' + e.weight + '</td><td class="num">' + e.active + '</td><td class="num">' + fmt(e.ewmaMs, 1) +
          '</td><td class="num">' + e.attempts + '</td><td class="num">' + e.failures + '</td><td class="num">' + e.ejectionCount + '</td></tr>';
      }).join('');
      if (errPct != null && errPct > worst) worst = errPct;
      return '<section class="svc" data-service="' + esc(s.name) + '"><div class="head"><span class="name">' + esc(s.name) + '</span>' +
        badge(s.breaker, 'breaker ' + s.breaker) + (s.panic ? ' ' + badge('panic', 'panic') : '') +
        '<span class="stat">lb <b>' + esc(s.lb) + '</b></span>' +
        '<span class="stat">discovery <b>' + esc(s.discovery.type) + '</b>' + (s.discovery.version ? ' <span class="unknown">(' + esc(s.discovery.version) + ')</span>' : '') + '</span>' +
        '<span class="stat">rate <b class="rate">' + fmt(rate, 1) + '</b> req/s</span>' +
        '<span class="stat">latency <b class="latency">' + fmt(lat, 1) + '</b> ms</span>' +
        '<span class="stat">errors <b>' + fmt(errPct, 1) + '</b> %</span>' +
        '<span class="stat">retries <b>' + st.retries + '</b></span>' +
        '<span class="stat">requests <b class="total">' + st.requests + '</b></span>' + spark(hist) +
        (s.discovery.lastError ? '<span class="err">' + esc(s.discovery.lastError) + '</span>' : '') +
        '</div><table><thead><tr><th>endpoint</th><th>state</th><th>zone</th><th class="num">weight</th><th class="num">in flight</th>' +
        '<th class="num">ewma ms</th><th class="num">attempts</th><th class="num">failures</th><th class="num">ejections</th></tr></thead><tbody>' +
        (rows || '<tr><td colspan="9" class="unknown">no endpoints</td></tr>') + '</tbody></table></section>';
    }).join('');
    document.getElementById('services').innerHTML = html || '<div class="empty">No services yet.</div>';
    document.getElementById('summary').innerHTML =
      '<div class="tile"><div class="k">services</div><div class="v">' + data.services.length + '</div></div>' +
      '<div class="tile"><div class="k">endpoints healthy</div><div class="v">' + healthyEps + ' / ' + totalEps + '</div></div>' +
      '<div class="tile"><div class="k">request rate</div><div class="v" id="total-rate">' + fmt(totalRate, 1) + ' /s</div></div>' +
      '<div class="tile"><div class="k">worst error rate</div><div class="v">' + fmt(worst, 1) + ' %</div></div>';
    document.getElementById('meta').textContent = (data.ready ? 'ready' : 'not ready') + ' · updated ' +
      new Date(t).toLocaleTimeString() + ' · poll #' + polls;
    document.body.setAttribute('data-polls', String(polls));
  }
  function poll() {
    fetch('/clusters', { cache: 'no-store' }).then(function (r) { return r.json(); }).then(render).catch(function (e) {
      document.getElementById('meta').textContent = 'admin endpoint unreachable: ' + e.message;
    }).then(function () { setTimeout(poll, interval); });
  }
  poll();
})();
</script>
</body>
</html>
`;
