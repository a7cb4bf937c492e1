// The Token Orchestrator dashboard. It talks to the JSON API of the server
// that served it and to nothing else.
//
// Live updates are short polling: every POLL_MS the page asks for the pool
// counts (GET /stats), the page of keys on screen and the last two minutes
// of activity, and merges them in; the whole hour and the lease durations
// are read again every FULL_EVERY polls and after every action. Polling
// needs nothing of the replicas that a plain request does not: any replica
// behind a load balancer answers, nothing is held open across a deploy, and
// every answer is a few index lookups.
'use strict';

(() => {
  const POLL_MS = 2000;
  const FULL_EVERY = 15;
  const MINUTES = 60;
  const PAGE_SIZE = 20;
  // Countdowns turn urgent this long before a lease ends or a key expires
  // (the pool counts call keys expiring within a minute "expiring soon").
  const LEASE_SOON_MS = 10000;
  const KEY_SOON_MS = 60000;
  // The cooldowns table: the keys that cooled down most in the last hours.
  const COOLDOWN_HOURS = 24;
  const COOLDOWN_TOP = 10;
  const POOL_NAME = /^[A-Za-z0-9._-]{1,64}$/;
  const SVG = 'http://www.w3.org/2000/svg';

  // The series of the activity chart. Each has its own colour, dash and
  // marker, so that lines on top of each other stay apart.
  const SERIES = [
    { key: 'assigned', label: 'Assigned', cls: 's-assigned', marker: 'dot' },
    { key: 'released', label: 'Released', cls: 's-released', marker: 'ring' },
    { key: 'leaseExpired', label: 'Leases expired', cls: 's-lease-expired', marker: 'square' },
    { key: 'expired', label: 'Keys expired', cls: 's-expired', marker: 'diamond' },
  ];

  const $ = (id) => document.getElementById(id);

  const state = {
    pool: 'default',
    stats: null,
    minutes: [],
    // The number of the activity request whose answer each minute shows.
    minuteLoads: new Map(),
    durations: null,
    cooldowns: [],
    // Every pool that has a policy or keys (GET /pools), by name: what
    // governs it. Null until the first answer.
    policies: null,
    page: { after: '', previous: [], keys: [], nextAfter: null },
    tokens: readStored('leaseTokens', {}),
    lastLease: null,
    clockOffset: 0,
    polls: 0,
    timer: 0,
    // Whether a pool was chosen yet, by the address, the start or a click.
    chosen: false,
  };

  // ---- the API ------------------------------------------------------------

  class ApiError extends Error {
    constructor(problem) {
      super(problem.detail || problem.title);
      this.problem = problem;
    }
  }

  async function api(method, path, { body, leaseToken } = {}) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (leaseToken) headers['If-Match'] = '"' + leaseToken + '"';
    const bearer = readStored('accessToken', '');
    if (bearer) headers.Authorization = 'Bearer ' + bearer;
    let resp;
    const sentAt = Date.now();
    try {
      resp = await fetch(path, {
        method, headers, cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new ApiError({ title: 'Server unreachable', status: 0, code: 'network_error',
        detail: 'The request could not be sent or got no answer. Is the server running?' });
    }
    noteServerClock(resp, sentAt);
    let data = null;
    try {
      data = await resp.json();
    } catch (err) {
      data = null;
    }
    if (!resp.ok) {
      if (data && data.title) throw new ApiError(data);
      throw new ApiError({ title: 'HTTP ' + resp.status, status: resp.status, code: 'unexpected_answer',
        detail: 'The server answered without problem details.' });
    }
    return data;
  }

  // Countdowns use the server's clock: a browser whose clock is clearly off
  // (by more than 2 s, well above the Date header's one-second grain) is
  // corrected. The server answered within the second of its Date header,
  // at a time between the sending of the request and now, so the clocks'
  // offset lies between lo and hi. An answer that was slow to arrive, or to
  // be handled on a busy machine, only widens that span: it does not pass
  // for a clock that is off and set the countdowns seconds back.
  function noteServerClock(resp, sentAt) {
    const date = Date.parse(resp.headers.get('Date') || '');
    if (Number.isNaN(date)) return;
    const lo = date - Date.now();
    const hi = date + 1000 - sentAt;
    state.clockOffset = lo > 2000 || hi < -2000 ? Math.round((lo + hi) / 2) : 0;
  }

  const serverNow = () => Date.now() + state.clockOffset;
  const enc = encodeURIComponent;

  // ---- storage (this tab only) ---------------------------------------------

  function readStored(name, fallback) {
    try {
      const raw = sessionStorage.getItem(name);
      return raw === null ? fallback : JSON.parse(raw);
    } catch (err) {
      return fallback;
    }
  }

  function writeStored(name, value) {
    try {
      sessionStorage.setItem(name, JSON.stringify(value));
    } catch (err) {
      // Storage is off: the values live as long as the page.
    }
  }

  // The lease tokens this page got, by key, with the time of their claim
  // (blockedAt): a key claimed at another time is under someone else's lease.
  function rememberToken(keyId, token, blockedAt) {
    if (token) state.tokens[keyId] = { token, blockedAt }; else delete state.tokens[keyId];
    writeStored('leaseTokens', state.tokens);
  }

  function tokenOf(keyId) {
    const lease = state.tokens[keyId];
    return lease ? lease.token : undefined;
  }

  // ---- loading --------------------------------------------------------------

  // Requests of one kind overlap (a poll and the refresh after an action,
  // say), and their answers can arrive in any order. Each request gets a
  // number when it is sent, and an answer is shown only if no answer to a
  // request sent after it was shown already: an old answer never overwrites
  // a newer one.
  function inOrder() {
    let sent = 0;
    let shown = 0;
    return {
      send: () => ++sent,
      show(n) {
        if (n < shown) return false;
        shown = n;
        return true;
      },
    };
  }

  const statsOrder = inOrder();
  const activityOrder = inOrder();
  const durationsOrder = inOrder();
  const cooldownsOrder = inOrder();
  const liveOrder = inOrder();

  async function loadStats() {
    const load = statsOrder.send();
    const stats = await api('GET', '/stats');
    if (!statsOrder.show(load)) return;
    state.stats = stats;
    renderPools();
  }

  // Each load of the keys' page gets a number: an answer is shown only if
  // no later load started meanwhile, so that a poll of the page that was
  // on screen, answered after a click on "next", never puts the old page
  // back under the new page's number.
  let keysLoad = 0;

  async function loadKeys() {
    const load = ++keysLoad;
    const pool = state.pool;
    let path = '/pools/' + enc(pool) + '/keys?limit=' + PAGE_SIZE;
    if (state.page.after) path += '&after=' + enc(state.page.after);
    const data = await api('GET', path);
    if (load !== keysLoad || pool !== state.pool) return;
    state.page.keys = data.keys;
    state.page.nextAfter = data.nextAfter;
    renderKeys();
  }

  // loadActivity reads the last two minutes, or the whole hour when full,
  // and merges them in. The answers of a poll (two minutes) and of a full
  // read overlap and may arrive in any order: each minute keeps the counts
  // of the answer to the latest request that covered it, so that neither
  // an old full read nor an old poll puts older counts back.
  async function loadActivity(full) {
    const pool = state.pool;
    const minutes = full ? MINUTES : 2;
    const load = activityOrder.send();
    const data = await api('GET', '/activity?pool=' + enc(pool) + '&minutes=' + minutes);
    if (pool !== state.pool) return;
    if (activityOrder.show(load)) {
      // Read from a standby (REPORT_DATABASE_URL), the charts may be behind
      // the counts above, which come from the primary: say by how much.
      $('activity-source').textContent = data.source === 'standby'
        ? 'Read from the standby, ' + data.replayLagSeconds.toFixed(1) + ' s behind the primary'
        : '';
    }
    const byMinute = new Map(state.minutes.map((m) => [m.minute, m]));
    for (const m of data.perMinute) {
      if (!(state.minuteLoads.get(m.minute) > load)) {
        byMinute.set(m.minute, m);
        state.minuteLoads.set(m.minute, load);
      }
    }
    state.minutes = [...byMinute.values()]
      .sort((a, b) => Date.parse(a.minute) - Date.parse(b.minute))
      .slice(-MINUTES);
    const kept = new Set(state.minutes.map((m) => m.minute));
    for (const minute of state.minuteLoads.keys()) if (!kept.has(minute)) state.minuteLoads.delete(minute);
    drawActivity();
  }

  async function loadDurations() {
    const pool = state.pool;
    const load = durationsOrder.send();
    const data = await api('GET', '/activity/lease-durations?pool=' + enc(pool) + '&minutes=' + MINUTES);
    if (pool !== state.pool || !durationsOrder.show(load)) return;
    state.durations = data;
    drawDurations();
  }

  // loadCooldowns reads the key-cooldowns report of the last day and keeps
  // the keys that cooled down most, over all its hours.
  async function loadCooldowns() {
    const pool = state.pool;
    const from = new Date(serverNow() - COOLDOWN_HOURS * 3600 * 1000).toISOString();
    const load = cooldownsOrder.send();
    const data = await api('GET', '/reports/key-cooldowns?pool=' + enc(pool) + '&from=' + enc(from));
    if (pool !== state.pool || !cooldownsOrder.show(load)) return;
    const byKey = new Map();
    for (const row of data.rows) {
      const k = byKey.get(row.keyId) || { keyId: row.keyId, cooldowns: 0, totalSeconds: 0, maxSeconds: 0 };
      k.cooldowns += row.cooldowns;
      k.totalSeconds += row.totalSeconds;
      k.maxSeconds = Math.max(k.maxSeconds, row.maxSeconds);
      byKey.set(row.keyId, k);
    }
    state.cooldowns = [...byKey.values()]
      .sort((a, b) => b.cooldowns - a.cooldowns || b.totalSeconds - a.totalSeconds)
      .slice(0, COOLDOWN_TOP);
    renderCooldowns();
  }

  function renderCooldowns() {
    const body = $('cooldowns-body');
    body.replaceChildren(...state.cooldowns.map((k) => {
      const row = document.createElement('tr');
      const key = document.createElement('th');
      key.scope = 'row';
      const id = document.createElement('code');
      id.textContent = k.keyId.slice(0, 8);
      id.title = k.keyId;
      key.append(id);
      const cells = [String(k.cooldowns), duration(k.totalSeconds * 1000), duration(k.maxSeconds * 1000)].map((text) => {
        const td = document.createElement('td');
        td.textContent = text;
        return td;
      });
      row.append(key, ...cells);
      return row;
    }));
    $('cooldowns-empty').hidden = state.cooldowns.length > 0;
  }

  // Policies change seldom, and only through the API: they are read with
  // the whole hour, on the choice of a pool and after every action. An
  // answer to an older request never replaces a newer one.
  let policiesSent = 0;
  let policiesShown = 0;

  async function loadPolicies() {
    const load = ++policiesSent;
    const data = await api('GET', '/pools');
    if (load < policiesShown) return;
    policiesShown = load;
    state.policies = new Map(data.pools.map((p) => [p.pool, p]));
    renderPolicy();
    if (state.stats) renderPools();
  }

  // refresh reads everything the page shows; full also reads the whole hour
  // of activity, the lease durations, the cooldowns and the pools' policies.
  async function refresh(full) {
    const load = liveOrder.send();
    const jobs = [loadStats(), loadKeys(), loadActivity(full)];
    if (full) jobs.push(loadDurations(), loadCooldowns());
    if (full) jobs.push(loadPolicies());
    const results = await Promise.allSettled(jobs);
    // An older refresh that ends late does not speak over a newer one.
    if (!liveOrder.show(load)) return false;
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) {
      setLive('error', 'Not updated: ' + describe(failed.reason));
      return false;
    }
    setLive('live', 'Live · updated ' + clock(new Date()));
    return true;
  }

  async function poll() {
    clearTimeout(state.timer);
    state.polls += 1;
    await refresh(state.polls % FULL_EVERY === 0);
    schedule();
  }

  function schedule() {
    clearTimeout(state.timer);
    if (document.hidden) {
      setLive('paused', 'Paused while the page is hidden');
      return;
    }
    state.timer = setTimeout(poll, POLL_MS);
  }

  function setLive(kind, text) {
    const live = $('live');
    live.dataset.state = kind;
    live.textContent = text;
  }

  // ---- pools ------------------------------------------------------------------

  function selectPool(pool) {
    if (!POOL_NAME.test(pool)) {
      showProblem('Cannot show that pool', { title: 'Invalid pool name', status: 0, code: 'invalid_pool',
        detail: 'A pool name is 1 to 64 letters, digits, “.”, “_” or “-”.' });
      return;
    }
    const changed = pool !== state.pool;
    state.pool = pool;
    state.chosen = true;
    $('pool-name').textContent = pool;
    $('keys-pool').textContent = pool;
    $('pool-input').value = pool;
    if (location.hash !== '#pool=' + enc(pool)) history.replaceState(null, '', '#pool=' + enc(pool));
    if (changed) {
      state.page = { after: '', previous: [], keys: [], nextAfter: null };
      state.minutes = [];
      state.minuteLoads = new Map();
      state.durations = null;
      state.cooldowns = [];
      renderKeys();
      renderCooldowns();
      renderPolicy();
    }
    if (state.stats) renderPools();
    refresh(true).then(schedule);
  }

  function renderPools() {
    const list = $('pools');
    const pools = state.stats.pools.slice();
    // The chosen pool, and pools that have a policy but no keys yet, show
    // with no keys.
    const names = [state.pool, ...(state.policies ? state.policies.keys() : [])];
    for (const name of names) {
      if (!pools.some((p) => p.pool === name)) pools.push({ pool: name, total: 0, free: 0, blocked: 0, expiringWithinMinute: 0 });
    }
    pools.sort((a, b) => (a.pool < b.pool ? -1 : 1));
    const cards = pools.map((p) => poolCard(list, p));
    cards.push(poolCard(list, Object.assign({ all: true }, state.stats.total)));
    // Keep each card's element (and the focus on it) from one poll to the
    // next; only the order and the numbers change.
    cards.forEach((card, i) => {
      if (list.children[i] !== card) list.insertBefore(card, list.children[i] || null);
    });
    while (list.children.length > cards.length) list.lastElementChild.remove();
  }

  function poolCard(list, p) {
    const id = p.all ? '*all' : p.pool;
    let item = [...list.children].find((li) => li.dataset.pool === id);
    if (!item) {
      item = document.createElement('li');
      item.dataset.pool = id;
      const head = p.all ? document.createElement('p') : document.createElement('button');
      head.className = 'pool-head';
      if (p.all) {
        head.textContent = 'All pools';
      } else {
        head.type = 'button';
        head.textContent = p.pool;
        head.addEventListener('click', () => selectPool(p.pool));
      }
      item.append(head);
      const dl = document.createElement('dl');
      for (const [stat, label] of [['total', 'Total'], ['seats', 'Seats'], ['free', 'Free'], ['blocked', 'Blocked'], ['expiring', 'Expiring soon']]) {
        const div = document.createElement('div');
        div.className = 'stat stat-' + stat;
        const dt = document.createElement('dt');
        dt.textContent = label;
        dt.title = label;
        const dd = document.createElement('dd');
        dd.dataset.stat = stat;
        div.append(dt, dd);
        dl.append(div);
      }
      item.append(dl);
      const meter = document.createElement('div');
      meter.className = 'meter';
      meter.setAttribute('aria-hidden', 'true');
      meter.append(document.createElement('span'));
      item.append(meter);
      if (!p.all) {
        const policy = document.createElement('p');
        policy.className = 'pool-policy';
        item.append(policy);
      }
    }
    const selected = !p.all && p.pool === state.pool;
    item.classList.toggle('pool', !p.all);
    item.classList.toggle('pool-all', !!p.all);
    item.classList.toggle('selected', selected);
    const head = item.firstElementChild;
    if (!p.all) {
      head.setAttribute('aria-pressed', String(selected));
      head.setAttribute('aria-label', 'Show pool ' + p.pool);
    }
    // Free and blocked count seats: as many as keys where each key has one.
    const seats = p.seats ?? p.total;
    const values = { total: p.total, seats, free: p.free, blocked: p.blocked, expiring: p.expiringWithinMinute };
    // Past the server's cap (1,000 keys about to expire), the counts of
    // keys about to expire are lower bounds.
    const atLeast = state.stats.expiringWithinMinuteCapped ? '+' : '';
    for (const dd of item.querySelectorAll('dd')) {
      dd.textContent = String(values[dd.dataset.stat]) + (dd.dataset.stat === 'expiring' ? atLeast : '');
      dd.classList.toggle('alert', dd.dataset.stat === 'expiring' && values.expiring > 0);
    }
    // Seats are shown where they differ from keys (a key of several seats).
    item.querySelector('.stat-seats').hidden = seats === p.total;
    // The share of seats held. A style property set from script is not an
    // inline style: the Content-Security-Policy allows it.
    item.querySelector('.meter span').style.width = (seats ? (100 * p.blocked) / seats : 0).toFixed(1) + '%';
    const policy = item.querySelector('.pool-policy');
    if (policy) {
      policy.textContent = policySummary(p.pool);
      policy.hidden = policy.textContent === '';
    }
    return item;
  }

  // ---- policies -----------------------------------------------------------------

  // policySummary says in a few words what sets a pool apart: the key life
  // and lease token its policy sets, or that the server's settings apply.
  function policySummary(name) {
    const pool = state.policies && state.policies.get(name);
    if (!pool) return '';
    if (!pool.hasPolicy) return 'server settings';
    const parts = [];
    if ('keyTTL' in pool.policy) parts.push(pool.policy.keyTTL === null ? 'keys stay' : 'keys live ' + humanSpan(pool.policy.keyTTL));
    if (pool.policy.requireLeaseToken) parts.push('token required');
    if (pool.policy.seats) parts.push(pool.policy.seats + ' seats per key');
    return parts.length ? parts.join(' · ') : 'policy';
  }

  const POLICY_TEXT = {
    keyTTL: (v) => (v === null ? 'keys stay' : humanSpan(v)),
    leaseTTL: (v) => humanSpan(v),
    maxLeaseTTL: (v) => (v === null ? 'no limit' : humanSpan(v)),
    requireLeaseToken: (v) => (v ? 'required' : 'not required'),
    maxWait: (v) => (parseSpan(v) === 0 ? 'no waiting' : humanSpan(v)),
    seats: (v) => (v === 1 ? '1 (one holder per key)' : v + ' leases at once'),
  };

  // renderPolicy shows what governs the chosen pool: each field of its
  // policy, or the server's setting (greyed) where the policy sets nothing.
  function renderPolicy() {
    const pool = state.policies && state.policies.get(state.pool);
    let inherited = 0;
    for (const dd of $('policy').querySelectorAll('dd')) {
      const field = dd.dataset.policy;
      const own = !!pool && pool.hasPolicy && field in pool.policy;
      dd.textContent = pool ? POLICY_TEXT[field](pool.effective[field]) : '—';
      dd.classList.toggle('inherited', !!pool && !own);
      dd.title = !pool ? '' : own ? 'Set by the pool’s policy' : 'The server’s setting: the pool’s policy does not set it';
      if (pool && !own) inherited++;
    }
    let note = '';
    if (!state.policies) note = '';
    else if (!pool) note = 'No keys and no policy yet: the server’s settings will apply.';
    else if (!pool.hasPolicy) note = 'No policy: the server’s settings apply.';
    else {
      note = 'The pool’s policy, set ' + when(new Date(pool.updatedAt)) +
        (inherited ? '; values in grey are the server’s settings.' : '.');
    }
    $('policy-note').textContent = note;
  }

  // parseSpan reads a duration as the API writes it (Go's form: 1h30m0s,
  // 2m0s, 1.5s, 100ms) in milliseconds.
  function parseSpan(text) {
    const units = { h: 3600000, m: 60000, s: 1000, ms: 1, us: 0.001, 'µs': 0.001, ns: 0.000001 };
    let ms = 0;
    for (const [, n, unit] of String(text).matchAll(/([0-9.]+)(h|ms|m|s|us|µs|ns)/g)) ms += Number(n) * units[unit];
    return ms;
  }

  // humanSpan writes a duration of the API for people: 24 h, 1 h 30 min, 2 min,
  // 10 s, 100 ms.
  function humanSpan(text) {
    const ms = parseSpan(text);
    if (ms < 1000) return Math.round(ms) + ' ms';
    const h = Math.floor(ms / 3600000);
    const min = Math.floor((ms % 3600000) / 60000);
    const s = Math.round(((ms % 60000) / 1000) * 1000) / 1000;
    const parts = [];
    if (h) parts.push(h + ' h');
    if (min) parts.push(min + ' min');
    if (s) parts.push(s + ' s');
    return parts.join(' ');
  }

  // ---- keys -------------------------------------------------------------------

  function renderKeys() {
    const body = $('keys-body');
    const keys = state.page.keys;
    const rows = keys.map((k) => keyRow(body, k));
    rows.forEach((row, i) => {
      if (body.children[i] !== row) body.insertBefore(row, body.children[i] || null);
    });
    while (body.children.length > rows.length) body.lastElementChild.remove();
    $('keys-empty').hidden = keys.length > 0 || state.page.after !== '';
    $('page-first').disabled = state.page.after === '';
    $('page-prev').disabled = state.page.previous.length === 0;
    $('page-next').disabled = !state.page.nextAfter;
    const pageNo = state.page.previous.length + 1;
    $('page-info').textContent = keys.length ? 'Page ' + pageNo + ' · ' + keys.length + ' keys' : 'Page ' + pageNo;
    tick();
  }

  const CELLS = ['key', 'name', 'hint', 'state', 'created', 'lease', 'expires', 'assigned', 'token', 'actions'];
  const CELL_LABELS = ['Key', 'Name', 'Secret', 'State', 'Created', 'Lease ends in', 'Expires in', 'Assigned', 'Lease token', 'Actions'];

  function keyRow(body, k) {
    let row = [...body.children].find((tr) => tr.dataset.keyId === k.keyId);
    const short = k.keyId.slice(0, 8);
    if (!row) {
      row = document.createElement('tr');
      row.dataset.keyId = k.keyId;
      CELLS.forEach((name, i) => {
        const cell = document.createElement(i === 0 ? 'th' : 'td');
        if (i === 0) cell.scope = 'row';
        cell.className = 'c-' + name;
        cell.dataset.label = CELL_LABELS[i];
        row.append(cell);
      });
      const id = document.createElement('code');
      id.textContent = short;
      id.title = k.keyId;
      const full = document.createElement('span');
      full.className = 'visually-hidden';
      full.textContent = ' (' + k.keyId + ')';
      row.querySelector('.c-key').append(id, full);
      const actions = document.createElement('div');
      actions.className = 'row-actions';
      row.querySelector('.c-actions').append(actions);
      actions.append(
        actionButton('keepalive', 'Keep alive', 'Keep key ' + short + ' alive', () => keepAlive(k.keyId)),
        actionButton('release', 'Release', 'Release key ' + short, () => release(k.keyId)),
        actionButton('delete', 'Delete', 'Delete key ' + short, (button) => confirmDelete(button, k.keyId)),
      );
    }
    const lease = state.tokens[k.keyId];
    // A key of several seats read as a whole shows no one lease: its
    // remembered token is dropped only when it has no held seat left.
    const several = (k.seats || 1) > 1;
    if (lease && (several ? k.seatsHeld === 0 : !k.isBlocked || k.blockedAt !== lease.blockedAt)) rememberToken(k.keyId, null);
    const token = tokenOf(k.keyId);
    const cooling = !k.isBlocked && k.coolingUntil && Date.parse(k.coolingUntil) > serverNow();
    row.dataset.state = k.isBlocked ? 'blocked' : cooling ? 'cooling' : 'free';
    row.classList.toggle('yours', !!token);
    const badge = row.querySelector('.c-state');
    badge.textContent = k.isBlocked ? (token ? 'blocked · yours' : 'blocked')
      : cooling ? 'cooling until ' + clock(new Date(k.coolingUntil)) : 'free';
    if (several && k.seatsHeld !== undefined) badge.textContent += ' · ' + k.seatsHeld + '/' + k.seats + ' seats held';
    // The name and the last characters of the secret tell keys apart; the
    // secret itself is never shown.
    const name = row.querySelector('.c-name');
    name.textContent = k.name || '—';
    name.title = k.name || '';
    const hint = row.querySelector('.c-hint');
    if (k.secretHint) {
      const code = document.createElement('code');
      code.textContent = '…' + k.secretHint;
      hint.replaceChildren(code);
    } else {
      hint.textContent = '—';
    }
    hint.title = k.secretHint ? 'The secret ends in ' + k.secretHint : '';
    const created = row.querySelector('.c-created');
    created.textContent = clock(new Date(k.createdAt));
    created.title = k.createdAt;
    setCountdown(row.querySelector('.c-lease'), k.leaseExpiresAt, 'ended', '—', LEASE_SOON_MS);
    // A key without an end of life stays until deleted (its pool's policy).
    const expires = row.querySelector('.c-expires');
    setCountdown(expires, k.expiresAt, 'expired', 'stays', KEY_SOON_MS);
    if (!k.expiresAt) expires.title = 'Lives until deleted';
    row.querySelector('.c-assigned').textContent = String(k.timesAssigned);
    row.querySelector('.c-token').textContent = token || '—';
    // A key of several seats is released lease by lease: with a token only.
    row.querySelector('[data-action="release"]').disabled = several ? !token : !k.isBlocked;
    return row;
  }

  function actionButton(action, text, label, onClick) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'small';
    button.dataset.action = action;
    button.textContent = text;
    button.setAttribute('aria-label', label);
    button.addEventListener('click', () => onClick(button));
    return button;
  }

  // setCountdown makes the cell count down to the deadline; the last soonMs
  // are shown as urgent.
  function setCountdown(cell, deadline, endedText, noneText, soonMs) {
    if (deadline) {
      cell.dataset.deadline = deadline;
      cell.dataset.ended = endedText;
      cell.dataset.soon = String(soonMs);
      cell.title = deadline;
    } else {
      delete cell.dataset.deadline;
      cell.textContent = noneText;
      cell.title = '';
      cell.classList.remove('soon');
    }
  }

  // tick moves every countdown on the page to the current second.
  function tick() {
    const now = serverNow();
    for (const cell of document.querySelectorAll('[data-deadline]')) {
      const left = Date.parse(cell.dataset.deadline) - now;
      cell.textContent = left > 0 ? duration(left) : cell.dataset.ended;
      cell.classList.toggle('soon', left > 0 && left < Number(cell.dataset.soon));
      cell.classList.toggle('over', left <= 0);
    }
  }

  function duration(ms) {
    const s = Math.ceil(ms / 1000);
    if (s < 60) return s + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min ' + String(s % 60).padStart(2, '0') + ' s';
    return Math.floor(m / 60) + ' h ' + String(m % 60).padStart(2, '0') + ' min';
  }

  function clock(date) {
    return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
  }

  // when is the clock time for today, and the date before it otherwise.
  function when(date) {
    const today = new Date().toDateString() === date.toDateString();
    return (today ? '' : date.toLocaleDateString([], { year: 'numeric', month: 'short', day: 'numeric' }) + ' ') + clock(date);
  }

  // ---- actions ----------------------------------------------------------------

  // act runs an action, says how it went, and shows the new state at once.
  async function act(what, run) {
    setStatus(what + '…');
    try {
      const message = await run();
      clearProblem();
      setStatus(message);
    } catch (err) {
      setStatus('');
      showProblem(what + ' failed', problemOf(err));
    }
    await refresh(true);
    schedule();
  }

  function createKeys(count) {
    return act('Creating ' + count + ' keys', async () => {
      const data = await api('POST', '/keys', { body: { count, pool: state.pool } });
      return 'Created ' + data.keys.length + (data.keys.length === 1 ? ' key' : ' keys') + ' in ' + state.pool + '.';
    });
  }

  function getKey() {
    return act('Getting a key', async () => {
      const key = await api('GET', '/keys?pool=' + enc(state.pool));
      // The page never shows a key's secret, nor keeps it.
      delete key.secret;
      rememberToken(key.keyId, key.leaseToken, key.blockedAt);
      state.lastLease = key;
      showLease();
      return 'Got key ' + key.keyId.slice(0, 8) + ' with lease token ' + key.leaseToken + '.';
    });
  }

  function keepAlive(keyId) {
    return act('Keeping key ' + keyId.slice(0, 8) + ' alive', async () => {
      // Only the lease's token extends a lease; without it the server
      // resets the key's life alone.
      const extending = Boolean(tokenOf(keyId));
      const key = await leaseCall('PUT', '/keys/' + enc(keyId) + '/keepalive', keyId);
      if (state.lastLease && state.lastLease.keyId === keyId) {
        state.lastLease.leaseExpiresAt = key.leaseExpiresAt;
        showLease();
      }
      return 'Kept key ' + keyId.slice(0, 8) + ' alive' + (key.isBlocked && extending ? '; its lease was extended.' : '.');
    });
  }

  function release(keyId) {
    return act('Releasing key ' + keyId.slice(0, 8), async () => {
      await leaseCall('PUT', '/keys/' + enc(keyId), keyId);
      rememberToken(keyId, null);
      forgetLease(keyId);
      return 'Released key ' + keyId.slice(0, 8) + '; it is free again.';
    });
  }

  function confirmDelete(button, keyId) {
    if (button.dataset.confirm !== 'yes') {
      button.dataset.confirm = 'yes';
      button.textContent = 'Confirm delete';
      setStatus('Press “Confirm delete” to delete key ' + keyId.slice(0, 8) + ' for good.');
      setTimeout(() => {
        delete button.dataset.confirm;
        button.textContent = 'Delete';
      }, 5000);
      return Promise.resolve();
    }
    return act('Deleting key ' + keyId.slice(0, 8), async () => {
      await api('DELETE', '/keys/' + enc(keyId));
      rememberToken(keyId, null);
      forgetLease(keyId);
      return 'Deleted key ' + keyId.slice(0, 8) + '.';
    });
  }

  // leaseCall presents the lease token this page holds for the key, if any.
  // A 404 or 409 means that lease is over: the token is forgotten.
  async function leaseCall(method, path, keyId) {
    try {
      return await api(method, path, { leaseToken: tokenOf(keyId) });
    } catch (err) {
      if (err instanceof ApiError && (err.problem.status === 404 || err.problem.status === 409)) {
        rememberToken(keyId, null);
        forgetLease(keyId);
      }
      throw err;
    }
  }

  function showLease() {
    const key = state.lastLease;
    $('lease').hidden = !key;
    if (!key) return;
    $('lease-key').textContent = key.keyId;
    $('lease-token').textContent = key.leaseToken;
    setCountdown($('lease-ends'), key.leaseExpiresAt, 'ended', '—', LEASE_SOON_MS);
    tick();
  }

  function forgetLease(keyId) {
    if (state.lastLease && state.lastLease.keyId === keyId) {
      state.lastLease = null;
      showLease();
    }
  }

  function setStatus(text) {
    $('action-status').textContent = text;
  }

  function showProblem(what, problem) {
    $('problem-title').textContent = what + ': ' + (problem.title || 'error');
    $('problem-detail').textContent = problem.detail || '';
    $('problem-code').textContent = (problem.status ? problem.status + ' ' : '') + (problem.code || '');
    $('problem').hidden = false;
  }

  function clearProblem() {
    $('problem').hidden = true;
  }

  function problemOf(err) {
    return err instanceof ApiError ? err.problem : { title: String(err), status: 0, code: 'error', detail: '' };
  }

  function describe(err) {
    return err instanceof ApiError ? err.problem.title : String(err);
  }

  // ---- charts ---------------------------------------------------------------

  function svg(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function marker(shape, cx, cy) {
    switch (shape) {
      case 'ring':
        return svg('circle', { cx, cy, r: 4.5, class: 'ring' });
      case 'square':
        return svg('rect', { x: cx - 3, y: cy - 3, width: 6, height: 6 });
      case 'diamond':
        return svg('path', { d: `M${cx} ${cy - 4}L${cx + 4} ${cy}L${cx} ${cy + 4}L${cx - 4} ${cy}Z` });
      default:
        return svg('circle', { cx, cy, r: 2.5 });
    }
  }

  // niceMax rounds a count up to 4, 10, 20, 40, 100, 200, 400, …: the top
  // of an axis whose middle line is a whole number too.
  function niceMax(v) {
    if (v <= 4) return 4;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const f of [1, 2, 4, 10]) if (f * p >= v) return f * p;
    return 10 * p;
  }

  function drawActivity() {
    const box = $('activity-chart');
    const data = state.minutes;
    const totals = {};
    for (const s of SERIES) totals[s.key] = data.reduce((sum, m) => sum + m[s.key], 0);
    const width = Math.max(box.clientWidth, 260);
    const height = 200;
    const m = { top: 10, right: 10, bottom: 26, left: 34 };
    const w = width - m.left - m.right;
    const h = height - m.top - m.bottom;
    const max = niceMax(Math.max(0, ...data.flatMap((d) => SERIES.map((s) => d[s.key]))));
    const n = Math.max(data.length, 2);
    const x = (i) => m.left + (i * w) / (n - 1);
    const y = (v) => m.top + h - (v / max) * h;

    const summary = SERIES.map((s) => totals[s.key] + ' ' + s.label.toLowerCase()).join(', ');
    const chart = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
      'aria-labelledby': 'activity-title-svg', class: 'plot' });
    chart.append(svg('title', { id: 'activity-title-svg' }, 'Events per minute in pool ' + state.pool + ' over the last ' + MINUTES + ' minutes: ' + summary + '.'));
    for (const s of SERIES) chart.dataset[s.key] = String(totals[s.key]);

    for (const v of [0, max / 2, max]) {
      chart.append(svg('line', { x1: m.left, x2: m.left + w, y1: y(v), y2: y(v), class: v ? 'grid' : 'axis' }));
      chart.append(svg('text', { x: m.left - 6, y: y(v) + 4, class: 'tick', 'text-anchor': 'end' }, String(v)));
    }
    const every = width < 480 ? 30 : 15;
    data.forEach((d, i) => {
      const t = new Date(d.minute);
      if (t.getMinutes() % every !== 0) return;
      chart.append(svg('line', { x1: x(i), x2: x(i), y1: m.top + h, y2: m.top + h + 4, class: 'axis' }));
      chart.append(svg('text', { x: x(i), y: height - 6, class: 'tick', 'text-anchor': 'middle' },
        t.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hour12: false })));
    });
    if (data.length) {
      for (const s of SERIES) {
        const points = data.map((d, i) => x(i).toFixed(1) + ',' + y(d[s.key]).toFixed(1)).join(' ');
        const g = svg('g', { class: 'series ' + s.cls });
        g.append(svg('polyline', { points }));
        data.forEach((d, i) => {
          if (d[s.key] > 0) g.append(marker(s.marker, x(i), y(d[s.key])));
        });
        chart.append(g);
      }
    }
    if (!SERIES.some((s) => totals[s.key] > 0)) {
      chart.append(svg('text', { x: m.left + w / 2, y: m.top + h / 2, class: 'empty-note', 'text-anchor': 'middle' },
        data.length ? 'No leases in the last hour' : 'Loading…'));
    }
    box.replaceChildren(chart);

    const legend = $('activity-legend');
    legend.replaceChildren(...SERIES.map((s) => {
      const li = document.createElement('li');
      li.className = s.cls;
      const swatch = document.createElement('span');
      swatch.className = 'swatch';
      swatch.setAttribute('aria-hidden', 'true');
      const label = document.createElement('span');
      label.textContent = s.label + ' ';
      const total = document.createElement('strong');
      total.dataset.total = s.key;
      total.textContent = String(totals[s.key]);
      li.append(swatch, label, total);
      return li;
    }));
  }

  function bucketLabel(b) {
    const fmt = (sec) => (sec >= 60 ? sec / 60 + ' min' : sec + ' s');
    if (b.toSeconds === null) return '≥ ' + fmt(b.fromSeconds);
    if (b.fromSeconds === 0) return '< ' + fmt(b.toSeconds);
    return fmt(b.fromSeconds).replace(/ (s|min)$/, b.fromSeconds >= 60 === b.toSeconds >= 60 ? '' : ' $1') + '–' + fmt(b.toSeconds);
  }

  function drawDurations() {
    const box = $('durations-chart');
    const d = state.durations;
    if (!d) {
      box.replaceChildren();
      return;
    }
    const rows = d.buckets.map((b) => ({ label: bucketLabel(b), value: b.leases, cls: 'bar' }));
    rows.push({ label: 'still held', value: d.held, cls: 'bar bar-held' });
    const width = Math.max(box.clientWidth, 260);
    const rowH = 18;
    const m = { top: 4, right: 40, bottom: 4, left: 86 };
    const height = m.top + m.bottom + rows.length * rowH;
    const w = width - m.left - m.right;
    const max = Math.max(1, ...rows.map((r) => r.value));
    const chart = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
      'aria-labelledby': 'durations-title-svg', class: 'plot' });
    chart.dataset.ended = String(d.ended);
    chart.dataset.held = String(d.held);
    const parts = rows.filter((r) => r.value > 0).map((r) => r.value + ' ' + r.label);
    chart.append(svg('title', { id: 'durations-title-svg' }, 'Leases started in the last ' + MINUTES + ' minutes by duration: ' +
      (parts.length ? parts.join(', ') : 'none') + '.'));
    rows.forEach((r, i) => {
      const top = m.top + i * rowH;
      chart.append(svg('text', { x: m.left - 6, y: top + rowH / 2 + 4, class: 'tick', 'text-anchor': 'end' }, r.label));
      const barW = (r.value / max) * w;
      chart.append(svg('rect', { x: m.left, y: top + 3, width: Math.max(barW, r.value ? 2 : 0), height: rowH - 6, class: r.cls }));
      chart.append(svg('text', { x: m.left + barW + 5, y: top + rowH / 2 + 4, class: 'tick value' }, String(r.value)));
    });
    chart.append(svg('line', { x1: m.left, x2: m.left, y1: m.top, y2: height - m.bottom, class: 'axis' }));
    box.replaceChildren(chart);
  }

  // ---- start ------------------------------------------------------------------

  function poolFromHash() {
    const match = /^#pool=(.+)$/.exec(location.hash);
    if (!match) return null;
    try {
      return decodeURIComponent(match[1]);
    } catch (err) {
      return null;
    }
  }

  function start() {
    $('pool-form').addEventListener('submit', (e) => {
      e.preventDefault();
      selectPool($('pool-input').value.trim());
    });
    $('create-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const raw = $('create-count').value.trim();
      const count = Number(raw);
      if (!Number.isInteger(count) || count < 1 || count > 10000) {
        showProblem('Cannot create keys', { title: 'Invalid number of keys', status: 0, code: 'invalid_count',
          detail: 'Enter a whole number from 1 to 10000, not “' + raw + '”.' });
        $('create-count').focus();
        return;
      }
      createKeys(count);
    });
    $('get-key').addEventListener('click', getKey);
    $('problem-dismiss').addEventListener('click', clearProblem);
    const turnPage = () => loadKeys().catch((err) => showProblem('Loading the keys failed', problemOf(err)));
    $('page-first').addEventListener('click', () => {
      state.page = { after: '', previous: [], keys: state.page.keys, nextAfter: null };
      turnPage();
    });
    $('page-prev').addEventListener('click', () => {
      state.page.after = state.page.previous.pop() || '';
      turnPage();
    });
    $('page-next').addEventListener('click', () => {
      if (!state.page.nextAfter) return;
      state.page.previous.push(state.page.after);
      state.page.after = state.page.nextAfter;
      turnPage();
    });
    $('access-token').value = readStored('accessToken', '');
    $('settings-form').addEventListener('submit', (e) => {
      e.preventDefault();
      writeStored('accessToken', $('access-token').value.trim());
      setStatus('Access token saved for this tab.');
      refresh(true).then(schedule);
    });
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) schedule(); else refresh(true).then(schedule);
    });
    window.addEventListener('hashchange', () => {
      const pool = poolFromHash();
      if (pool && pool !== state.pool) selectPool(pool);
    });
    if (typeof ResizeObserver === 'function') {
      let pending = 0;
      const redraw = () => {
        cancelAnimationFrame(pending);
        pending = requestAnimationFrame(() => {
          drawActivity();
          drawDurations();
        });
      };
      new ResizeObserver(redraw).observe($('activity-chart'));
    }
    setInterval(tick, 1000);
    drawActivity();
    // Without a pool in the address, show default, or the first pool when
    // there is no default pool.
    const fromHash = poolFromHash();
    if (fromHash) {
      selectPool(fromHash);
      return;
    }
    // A pool chosen while the counts were on their way stays chosen.
    api('GET', '/stats').then((stats) => {
      if (state.chosen) return;
      const names = stats.pools.map((p) => p.pool);
      selectPool(names.length === 0 || names.includes('default') ? 'default' : names[0]);
    }, () => {
      if (!state.chosen) selectPool('default');
    });
  }

  start();
})();
