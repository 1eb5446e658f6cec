/**
 * The admin page: one self-contained HTML document (inline CSS and JS, no build step, no external
 * assets) that polls `/clusters` and shows what the mesh knows: whether the process is serving,
 * each service's health and why, its endpoints (by instance name when discovery knows it) with
 * their state and why, recent latency quantiles, request rates, and the inbound side (requests by
 * route, authorization denials). It holds no data itself: with `admin.token` set it is also the
 * body of the 401 answer, and its script asks for the token and sends it as a bearer token.
 *
 * Its links and requests are relative, so it also works behind a path prefix (a proxy). The
 * script avoids template literals so that it can live in this TypeScript string as is.
 */
export const ADMIN_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>meshlet admin</title>
<style>
  :root { --bg:#0f1419; --panel:#171d24; --line:#26303b; --text:#d7dde4; --dim:#8795a5; --ok:#3fb950;
          --warn:#d29922; --bad:#f85149; --info:#58a6ff; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background:var(--bg); color:var(--text); }
  header { display:flex; align-items:center; flex-wrap:wrap; gap:10px 16px; padding:14px 24px; border-bottom:1px solid var(--line); background:var(--panel); }
  header h1 { font-size:18px; margin:0; letter-spacing:.3px; }
  header h1 span { color:var(--info); }
  header .meta { color:var(--dim); font-size:12px; }
  header nav { margin-left:auto; display:flex; gap:14px; font-size:13px; }
  a { color:var(--info); text-decoration:none; } a:hover { text-decoration:underline; }
  main { padding:20px 24px; display:grid; gap:18px; }
  h2 { font-size:16px; margin:0; font-weight:600; }
  h3 { font-size:13px; margin:0; font-weight:600; color:var(--dim); text-transform:uppercase; letter-spacing:.5px; }
  #app { display:grid; gap:18px; }
  #services { display:grid; gap:14px; }
  .summary { display:flex; gap:12px; flex-wrap:wrap; }
  .tile { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:10px 16px; min-width:150px; }
  .tile .k { color:var(--dim); font-size:12px; text-transform:uppercase; letter-spacing:.5px; }
  .tile .v { font-size:22px; font-weight:600; font-variant-numeric: tabular-nums; }
  .tile .s { color:var(--dim); font-size:12px; }
  .panel { background:var(--panel); border:1px solid var(--line); border-radius:8px; overflow:hidden; }
  .panel > .head { display:flex; flex-wrap:wrap; align-items:center; gap:8px 18px; padding:12px 16px; border-bottom:1px solid var(--line); }
  .panel > .body { padding:10px 16px; display:flex; flex-wrap:wrap; gap:10px 28px; align-items:flex-start; border-bottom:1px solid var(--line); }
  .stat { color:var(--dim); font-size:12px; } .stat b { color:var(--text); font-size:14px; font-weight:600; font-variant-numeric: tabular-nums; }
  .stats { display:grid; grid-template-columns: repeat(3, auto); gap:4px 22px; }
  .badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; border:1px solid currentColor; white-space:nowrap; }
  .neutral, .idle, .waiting, .closed-breaker, .off { color:var(--dim); }
  .healthy, .serving { color:var(--ok); }
  .degraded, .half_open, .draining, .not_ready { color:var(--warn); }
  .down, .unhealthy, .ejected, .failing, .open, .panic, .closed { color:var(--bad); }
  ul.reasons { margin:0; padding:0 0 0 18px; font-size:12px; color:var(--dim); }
  ul.reasons li.first { color:var(--text); }
  #problems { border-left:3px solid var(--warn); } #problems.severe { border-left-color:var(--bad); }
  #problems ul { margin:0; padding:10px 16px 10px 34px; }
  table { width:100%; border-collapse:collapse; font-size:13px; }
  th, td { text-align:left; padding:6px 16px; border-bottom:1px solid var(--line); vertical-align:top; }
  th { color:var(--dim); font-weight:500; font-size:12px; white-space:nowrap; }
  td { white-space:nowrap; }
  td.why { white-space:normal; color:var(--dim); font-size:12px; min-width:220px; max-width:520px; }
  tr:last-child td { border-bottom:none; }
  td.num, th.num { text-align:right; font-variant-numeric: tabular-nums; }
  .dim { color:var(--dim); } .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size:12px; }
  figure.chart { margin:0; }
  figure.chart figcaption { color:var(--dim); font-size:11px; }
  figure.chart svg text { fill:var(--dim); font-size:9px; font-family: ui-monospace, monospace; }
  .legend-err { color:var(--bad); }
  .empty { color:var(--dim); padding:30px; text-align:center; }
  .err { color:var(--bad); font-size:12px; }
  #login { max-width:420px; margin:60px auto; padding:20px 24px; }
  #login label { display:block; margin-bottom:8px; }
  #login input { width:100%; padding:8px; background:var(--bg); border:1px solid var(--line); border-radius:6px; color:var(--text); }
  #login button { margin-top:12px; padding:6px 16px; background:var(--info); color:#000; border:0; border-radius:6px; font-weight:600; cursor:pointer; }
  [hidden] { display:none !important; }
</style>
</head>
<body>
<header>
  <h1><span>mesh</span>let</h1>
  <span id="serving" class="badge neutral">connecting…</span>
  <span id="health" class="badge neutral" hidden></span>
  <div class="meta" id="meta" aria-live="polite">connecting…</div>
  <nav aria-label="raw endpoints"><a href="metrics">/metrics</a><a href="clusters">/clusters</a><a href="config_dump">/config_dump</a><a href="ready">/ready</a></nav>
</header>
<main>
  <section id="login" class="panel" hidden aria-labelledby="login-title">
    <form id="login-form">
      <h2 id="login-title">Admin token</h2>
      <p class="dim">This admin server needs a bearer token (<span class="mono">admin.token</span>). It stays in this browser tab only.</p>
      <label for="token">Token</label>
      <input id="token" name="token" type="password" autocomplete="off" required>
      <p class="err" id="login-error" role="alert"></p>
      <button type="submit">Sign in</button>
    </form>
  </section>
  <div id="app">
    <section class="panel" id="problems" hidden aria-labelledby="problems-title"><div class="head"><h2 id="problems-title">Needs attention</h2></div><ul id="problem-list"></ul></section>
    <div class="summary" id="summary"></div>
    <div id="services"><div class="empty">Loading…</div></div>
    <section class="panel" id="inbound" aria-labelledby="inbound-title"></section>
  </div>
</main>
<script>
(function () {
  var params = new URLSearchParams(location.search);
  var interval = Math.max(250, Number(params.get('interval')) || 1000);
  var KEY = 'meshlet-admin-token';
  var polls = 0;
  var timer = null;
  function token() { try { return sessionStorage.getItem(KEY); } catch (e) { return null; } }
  function headers() { var t = token(); return t ? { authorization: 'Bearer ' + t } : {}; }
  function esc(s) { return String(s == null ? '' : s).replace(/[&<>"']/g, function (c) { return '&#' + c.charCodeAt(0) + ';'; }); }
  function fmt(n, d) { return (n == null || !isFinite(n)) ? '–' : n.toFixed(d); }
  function fmtMs(n) { return n == null ? '–' : n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : n.toFixed(0); }
  function badge(cls, text, title) { return '<span class="badge ' + esc(cls) + '"' + (title ? ' title="' + esc(title) + '"' : '') + '>' + esc(text || cls) + '</span>'; }
  function sum(a) { var s = 0; for (var i = 0; i < a.length; i++) s += a[i]; return s; }
  function lastRate(a) { var k = Math.min(10, a.length); return k ? sum(a.slice(a.length - k)) / k : 0; }
  function ago(ms) {
    if (!isFinite(ms)) return '';
    var s = Math.max(0, Math.round(ms / 1000));
    return s < 60 ? s + ' s ago' : s < 3600 ? Math.round(s / 60) + ' min ago' : Math.round(s / 3600) + ' h ago';
  }
  function shortVersion(v) { v = String(v); return v.length > 24 ? v.slice(0, 14) + '…' + v.slice(-6) : v; }
  // A labelled chart of per-second counts over the last minute: y axis from 0 to its maximum,
  // x axis from -60 s to now; "a" in blue, "b" (failures, denials) in red.
  function chart(a, b, label, bLabel) {
    var W = 220, H = 50, L = 28, T = 5, B = 13, w = W - L - 4, h = H - T - B;
    var max = Math.max(1, Math.max.apply(null, a.concat(b)));
    var n = a.length;
    function path(p) {
      return p.map(function (v, i) {
        return (i ? 'L' : 'M') + (L + (n > 1 ? i * w / (n - 1) : 0)).toFixed(1) + ' ' + (T + h - (v / max) * h).toFixed(1);
      }).join(' ');
    }
    var now = n ? a[n - 1] : 0;
    var failures = sum(b);
    var aria = label + ' over the last 60 seconds: now ' + now + ' per second, peak ' + max + (failures ? ', ' + failures + ' ' + bLabel : '');
    return '<figure class="chart"><figcaption>' + esc(label) + ' · last 60 s' +
      (bLabel ? ' · <span class="legend-err">' + esc(bLabel) + '</span>' : '') + '</figcaption>' +
      '<svg width="' + W + '" height="' + H + '" role="img" aria-label="' + esc(aria) + '">' +
      '<line x1="' + L + '" y1="' + T + '" x2="' + L + '" y2="' + (T + h) + '" stroke="#3b4754"/>' +
      '<line x1="' + L + '" y1="' + (T + h) + '" x2="' + (L + w) + '" y2="' + (T + h) + '" stroke="#3b4754"/>' +
      '<text x="' + (L - 3) + '" y="' + (T + 7) + '" text-anchor="end">' + max + '</text>' +
      '<text x="' + (L - 3) + '" y="' + (T + h) + '" text-anchor="end">0</text>' +
      '<text x="' + L + '" y="' + (H - 1) + '">-60s</text>' +
      '<text x="' + (L + w) + '" y="' + (H - 1) + '" text-anchor="end">now</text>' +
      (n ? '<path d="' + path(a) + '" fill="none" stroke="#58a6ff" stroke-width="1.5"/>' : '') +
      (n && failures ? '<path d="' + path(b) + '" fill="none" stroke="#f85149" stroke-width="1.5"/>' : '') +
      '</svg></figure>';
  }
  function reasons(list, cls) {
    if (!list || !list.length) return '';
    return '<ul class="reasons ' + (cls || '') + '">' + list.map(function (r, i) { return '<li' + (i ? '' : ' class="first"') + '>' + esc(r) + '</li>'; }).join('') + '</ul>';
  }
  var SERVING = { serving: 'serving', not_ready: 'not ready', draining: 'draining', closed: 'closed' };
  var SERVING_TITLE = {
    serving: 'ready and not draining: /ready answers 200',
    not_ready: 'the mesh is not ready yet: /ready answers 503',
    draining: 'draining: /ready answers 503, in-flight requests finish',
    closed: 'the mesh is closed'
  };
  function endpointRow(e) {
    var name = e.name ? '<b>' + esc(e.name) + '</b><br><span class="dim mono">' + esc(e.id) + '</span>' : '<span class="mono">' + esc(e.id) + '</span>';
    var r = e.recent;
    return '<tr data-endpoint="' + esc(e.id) + '" data-state="' + esc(e.state) + '"><td>' + name + '</td><td>' + badge(e.state) + '</td><td class="why">' + esc(e.reasons.join('; ')) +
      '</td><td>' + esc(e.zone || '–') + '</td><td class="num">' + e.weight + '</td><td class="num">' + e.active +
      '</td><td class="num">' + fmtMs(r.p50Ms) + '</td><td class="num">' + fmtMs(r.p99Ms) + '</td><td class="num">' + r.count +
      '</td><td class="num">' + r.failures + '</td><td class="num">' + e.ejectionCount +
      '</td><td class="num load">' + loadCell(e.load) + '</td><td class="num limit">' + limitCell(e.concurrency) + '</td></tr>';
  }
  // Reported load: utilization %, rps, and the weight it gives (titles carry the rest).
  function loadCell(l) {
    if (!l) return '<span class="dim" title="no load report">–</span>';
    var title = 'reported ' + ago(l.ageMs) + ' ago (' + l.reports + ' reports); rps ' + fmt(l.rps, 1) + ', errors/s ' + fmt(l.eps, 1) +
      Object.keys(l.namedMetrics).map(function (k) { return '; ' + k + ' ' + l.namedMetrics[k]; }).join('');
    return '<span title="' + esc(title) + '">' + fmt(100 * l.utilization, 0) + '%</span>' +
      (l.weight > 0 ? ' <span class="dim">w ' + fmt(l.weight, 0) + '</span>' : '');
  }
  // Adaptive concurrency: in flight / limit.
  function limitCell(c) {
    if (!c) return '<span class="dim" title="no adaptive concurrency">–</span>';
    var title = 'minRTT ' + (c.minRttMs === null ? 'not measured yet' : c.minRttMs + ' ms') + (c.measuring ? ' (measuring)' : '') +
      (c.sampleRttMs === null ? '' : ', sampleRTT ' + c.sampleRttMs + ' ms') + '; refused ' + c.refused;
    return '<span title="' + esc(title) + '">' + c.inFlight + ' / ' + c.limit + '</span>';
  }
  function service(s, t) {
    var st = s.stats || { requests: 0, retries: 0 };
    var r = s.recent;
    var rate = lastRate(s.rate.requests);
    var errPct = r.count ? 100 * r.errors / r.count : null;
    var breaker = s.breaker === 'off' ? badge('off', 'no breaker') : s.breaker === 'closed' ? badge('closed-breaker', 'breaker closed') :
      badge(s.breaker, s.breaker === 'open' ? 'breaker open' : 'breaker half-open');
    var d = s.discovery;
    var updated = d.lastUpdate ? ', updated ' + ago(t - Date.parse(d.lastUpdate)) : '';
    var version = d.version && d.version !== d.type ? ' <span class="mono dim" title="' + esc(d.version) + '">' + esc(shortVersion(d.version)) + '</span>' : '';
    var rows = s.endpoints.map(endpointRow).join('');
    var c = s.endpointCounts;
    return '<section class="panel svc" data-service="' + esc(s.name) + '" data-health="' + esc(s.health) + '" aria-label="service ' + esc(s.name) + '">' +
      '<div class="head"><h2 class="name">' + esc(s.name) + '</h2>' + badge(s.health) + breaker + (s.panic ? badge('panic', 'panic mode') : '') +
      '<span class="stat">lb <b>' + esc(s.lb) + '</b></span>' +
      '<span class="stat">discovery <b>' + esc(d.type) + '</b>' + version + '<span class="dim">' + esc(updated) + '</span></span>' +
      (d.lastError ? '<span class="err">discovery error: ' + esc(d.lastError) + '</span>' : '') + '</div>' +
      '<div class="body"><div>' + reasons(s.reasons) + '</div>' +
      '<div class="stats">' +
      '<span class="stat">rate <b class="rate">' + fmt(rate, 1) + '</b> req/s</span>' +
      '<span class="stat">p50 <b class="p50">' + fmtMs(r.p50Ms) + '</b> ms</span>' +
      '<span class="stat">p99 <b class="p99">' + fmtMs(r.p99Ms) + '</b> ms</span>' +
      '<span class="stat">errors <b class="errors">' + fmt(errPct, 1) + '</b> %</span>' +
      '<span class="stat">endpoints <b>' + c.healthy + ' / ' + c.total + '</b> healthy</span>' +
      '<span class="stat">requests <b class="total">' + st.requests + '</b>, retries <b>' + st.retries + '</b></span>' +
      '</div>' + chart(s.rate.requests, s.rate.errors, 'requests/s', 'failed') + '</div>' +
      '<table><thead><tr><th scope="col">endpoint</th><th scope="col">state</th><th scope="col">why</th><th scope="col">zone</th><th scope="col" class="num">weight</th><th scope="col" class="num">in flight</th>' +
      '<th scope="col" class="num">p50 ms</th><th scope="col" class="num">p99 ms</th><th scope="col" class="num">attempts</th><th scope="col" class="num">failed</th><th scope="col" class="num">ejections</th>' +
      '<th scope="col" class="num" title="utilization the endpoint reported (ORCA) and the weight it gives">load</th><th scope="col" class="num" title="attempts in flight / adaptive concurrency limit">limit</th></tr></thead><tbody>' +
      (rows || '<tr><td colspan="13" class="dim">no endpoints</td></tr>') + '</tbody></table></section>';
  }
  function inbound(v) {
    var head = '<div class="head"><h2 id="inbound-title">Inbound</h2>';
    if (!v.recorded) return head + '</div><div class="empty">Inbound requests are not recorded.</div>';
    var rows = v.routes.map(function (r) {
      var x = r.recent;
      return '<tr data-route="' + esc(r.route) + '"><td class="mono">' + esc(r.route) + '</td><td>' + esc(r.transport) + '</td><td class="num">' + r.total +
        '</td><td class="num">' + r.denied + '</td><td class="num">' + x.count + '</td><td class="num">' + x.clientErrors + '</td><td class="num">' + x.serverErrors +
        '</td><td class="num">' + fmtMs(x.p50Ms) + '</td><td class="num">' + fmtMs(x.p99Ms) + '</td></tr>';
    }).join('');
    var denials = v.denials.map(function (d) {
      return '<tr><td>' + esc(new Date(d.time).toLocaleTimeString()) + '</td><td>' + esc(d.method) + '</td><td class="mono">' + esc(d.path) +
        '</td><td class="mono">' + esc(d.principal || d.client || 'anonymous') + '</td><td class="why">' + esc(d.reason) + '</td></tr>';
    }).join('');
    return head + '<span class="stat">requests <b class="in-total">' + v.total + '</b></span>' +
      '<span class="stat">denied <b class="in-denied">' + v.denied + '</b></span>' +
      '<span class="stat">rate <b>' + fmt(lastRate(v.rate.requests), 1) + '</b> req/s</span>' +
      chart(v.rate.requests, v.rate.denied, 'inbound requests/s', 'denied') + '</div>' +
      '<table aria-label="inbound requests by route"><thead><tr><th scope="col">route</th><th scope="col">transport</th><th scope="col" class="num">requests</th><th scope="col" class="num">denied</th>' +
      '<th scope="col" class="num">last min</th><th scope="col" class="num">4xx</th><th scope="col" class="num">5xx</th><th scope="col" class="num">p50 ms</th><th scope="col" class="num">p99 ms</th></tr></thead><tbody>' +
      (rows || '<tr><td colspan="9" class="dim">no inbound requests yet</td></tr>') + '</tbody></table>' +
      (denials ? '<div class="head"><h3>Recent denials</h3></div><table aria-label="recent denials"><thead><tr><th scope="col">time</th><th scope="col">method</th><th scope="col">path</th><th scope="col">caller</th><th scope="col">reason</th></tr></thead><tbody>' + denials + '</tbody></table>' : '');
  }
  function render(data) {
    polls++;
    var t = data.time;
    var okEps = 0, totalEps = 0, outRate = 0, down = 0, degraded = 0;
    data.services.forEach(function (s) {
      okEps += s.endpointCounts.healthy; totalEps += s.endpointCounts.total; outRate += lastRate(s.rate.requests);
      if (s.health === 'down') down++; else if (s.health === 'degraded') degraded++;
    });
    document.getElementById('services').innerHTML = data.services.map(function (s) { return service(s, t); }).join('') ||
      '<div class="empty">No services yet.</div>';
    document.getElementById('inbound').innerHTML = inbound(data.inbound);
    var v = data.inbound;
    document.getElementById('summary').innerHTML =
      '<div class="tile"><div class="k">services</div><div class="v">' + data.services.length + '</div><div class="s">' + down + ' down, ' + degraded + ' degraded</div></div>' +
      '<div class="tile"><div class="k">endpoints healthy</div><div class="v">' + okEps + ' / ' + totalEps + '</div><div class="s">healthy, idle or degraded</div></div>' +
      '<div class="tile"><div class="k">outbound</div><div class="v" id="total-rate">' + fmt(outRate, 1) + ' /s</div><div class="s">last 10 s</div></div>' +
      '<div class="tile"><div class="k">inbound</div><div class="v">' + (v.recorded ? fmt(lastRate(v.rate.requests), 1) + ' /s' : '–') + '</div><div class="s">' + v.denied + ' denied in total</div></div>';
    var problems = data.health.problems;
    var pb = document.getElementById('problems');
    pb.hidden = problems.length === 0;
    pb.className = 'panel' + (data.health.state === 'down' ? ' severe' : '');
    document.getElementById('problem-list').innerHTML = problems.map(function (p) { return '<li>' + esc(p) + '</li>'; }).join('');
    var sv = document.getElementById('serving');
    sv.className = 'badge ' + data.serving;
    sv.textContent = SERVING[data.serving] || data.serving;
    sv.title = SERVING_TITLE[data.serving] || '';
    var hb = document.getElementById('health');
    hb.hidden = false;
    var hs = data.health.state;
    hb.className = 'badge ' + (hs === 'empty' ? 'idle' : hs);
    hb.textContent = hs === 'empty' ? 'no services' : problems.length ? problems.length + (problems.length === 1 ? ' service needs attention' : ' services need attention') : 'services ' + hs;
    document.getElementById('meta').textContent = 'updated ' + new Date(t).toLocaleTimeString() + ' · quantiles and counts over the last ' + data.windowSeconds + ' s · poll #' + polls;
    document.body.setAttribute('data-polls', String(polls));
  }
  function showLogin(message) {
    document.getElementById('login').hidden = false;
    document.getElementById('app').hidden = true;
    document.getElementById('login-error').textContent = message || '';
    document.getElementById('meta').textContent = 'sign in to see the mesh';
  }
  function poll() {
    timer = null;
    fetch('clusters', { cache: 'no-store', headers: headers() }).then(function (r) {
      if (r.status === 401) {
        var had = token();
        try { sessionStorage.removeItem(KEY); } catch (e) {}
        showLogin(had ? 'That token was not accepted.' : '');
        return;
      }
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json().then(function (data) {
        document.getElementById('login').hidden = true;
        document.getElementById('app').hidden = false;
        render(data);
        timer = setTimeout(poll, interval);
      });
    }).catch(function (e) {
      var sv = document.getElementById('serving');
      sv.className = 'badge down'; sv.textContent = 'unreachable';
      document.getElementById('meta').textContent = 'admin endpoint unreachable: ' + e.message;
      timer = setTimeout(poll, interval);
    });
  }
  document.getElementById('login-form').addEventListener('submit', function (ev) {
    ev.preventDefault();
    try { sessionStorage.setItem(KEY, document.getElementById('token').value.trim()); } catch (e) {}
    document.getElementById('token').value = '';
    if (timer) clearTimeout(timer);
    poll();
  });
  // With a token, the raw endpoints are fetched with it and shown as text in a new tab.
  document.querySelector('header nav').addEventListener('click', function (ev) {
    var a = ev.target.closest('a');
    if (!a || !token()) return;
    ev.preventDefault();
    var w = window.open('', '_blank');
    fetch(a.getAttribute('href'), { headers: headers(), cache: 'no-store' }).then(function (r) { return r.text(); }).then(function (text) {
      var url = URL.createObjectURL(new Blob([text], { type: 'text/plain;charset=utf-8' }));
      if (w) w.location.href = url; else location.href = url;
    });
  });
  poll();
})();
</script>
</body>
</html>
`;
