/*
 * app.js — the behaviour of innserve's web page (ui/index.html; docs/ui.md).
 *
 * Talks to the daemon's own API on this origin: GET /v1/models, /v1/models/{m},
 * /v1/models/{m}/certificate; POST /v1/models/{m}/sample (JSON for the plot and table,
 * Accept: text/csv or application/x-npy for downloads); POST /v1/models/{m}/calibration as
 * a job ("async": true, then GET /v1/jobs/{id} until done; DELETE cancels).  The metadata's
 * "test_vectors" fill the Test vector choice: picking a row fills y, and the corner plot of
 * the samples drawn for it marks that row's x (the ground truth of y where the checkpoint's
 * test vectors are simulated pairs).  With a bearer
 * token in sessionStorage every API call carries it; a 401 asks for it.
 *
 * The plots are hand-written canvas code: a corner plot (1-D histograms on the diagonal,
 * 2-D density histograms below it, drawn as one small image per panel scaled up without
 * smoothing), rank histograms with their 99% band, coverage curves with the binomial band
 * and the TARP curve.  window.innserveUI exposes the plotting functions for the browser
 * tests (tests/ui/test_ui.mjs), which time them.
 */
(function () {
  'use strict';

  var TOKEN_KEY = 'innserve-token';
  var state = {
    models: [], model: null, meta: null,
    lastRequest: null,   // {path, body, truth}: the sample request the plot shows
    lastSeed: null,
    job: null,           // {url, cancelled}
  };

  // ---- small helpers ------------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      if (k === 'class') e.className = attrs[k];
      else if (k.slice(0, 5) === 'data-' || k.slice(0, 5) === 'aria-' || k === 'scope' ||
               k === 'role' || k === 'title' || k === 'type' || k === 'id')
        e.setAttribute(k, attrs[k]);
      else e[k] = attrs[k];
    }
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  // Numbers as shown: 6 significant digits, no trailing zeros; the exact value is kept in
  // the cell's data-value (the shortest string that reads back as the same double).
  function fmt(v) {
    if (v === null || v === undefined) return '—';
    if (typeof v !== 'number') return String(v);
    if (!isFinite(v)) return String(v);
    if (v === 0) return '0';
    var a = Math.abs(v);
    if (a >= 1e-4 && a < 1e6) return String(Number(v.toPrecision(6)));
    return v.toExponential(4);
  }

  function numCell(v) {
    var td = el('td', null, fmt(v));
    if (typeof v === 'number') td.setAttribute('data-value', String(v));
    return td;
  }

  function setStatus(id, text, isErr) {
    var s = $(id);
    s.textContent = text;
    s.classList.toggle('err', !!isErr);
  }

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; }
  }

  // fetch on this origin with the token; a 401 opens the token form and rejects.
  function api(path, opts) {
    opts = opts || {};
    var headers = opts.headers || {};
    var t = token();
    if (t) headers['Authorization'] = 'Bearer ' + t;
    opts.headers = headers;
    return fetch(path, opts).then(function (r) {
      if (r.status === 401) {
        return r.json().catch(function () { return {}; }).then(function (b) {
          askToken(b.error || 'this server needs a bearer token');
          var err = new Error(b.error || 'unauthorized');
          err.status = 401;
          throw err;
        });
      }
      return r;
    });
  }

  // The JSON body of an answer; a non-2xx answer rejects with the server's message.
  function json(r) {
    return r.text().then(function (t) {
      var b = null;
      try { b = t ? JSON.parse(t) : null; } catch (e) { b = null; }
      if (!r.ok) {
        var err = new Error(b && b.error ? b.error + ' (' + r.status + ' ' + (b.code || '') + ')'
                                         : 'HTTP ' + r.status);
        err.status = r.status;
        err.code = b && b.code;
        err.body = b;
        throw err;
      }
      return b;
    });
  }

  function askToken(msg) {
    $('auth').hidden = false;
    $('auth-msg').textContent = msg + '. Enter the token (it stays in this tab, ' +
      'sessionStorage, and is sent only to this server).';
    $('conn').textContent = 'Needs a bearer token';
    $('auth-token').focus();
  }

  // ---- models -------------------------------------------------------------------------

  function loadModels() {
    $('conn').textContent = 'Loading models…';
    return api('/v1/models').then(json).then(function (b) {
      state.models = b.models || [];
      var ul = $('models');
      ul.textContent = '';
      state.models.forEach(function (m) {
        var li = el('li');
        var btn = el('button', {type: 'button', 'data-model': m.name, 'aria-pressed': 'false'});
        btn.appendChild(el('span', {class: 'name'}, m.name));
        btn.appendChild(el('span', {class: 'kind'}, (m.kind || '?') + ' · v' + m.version));
        if (m.state !== 'READY') {
          btn.disabled = true;
          btn.appendChild(el('span', {class: 'reason'}, m.state + (m.reason ? ': ' + m.reason : '')));
        }
        btn.addEventListener('click', function () { selectModel(m.name); });
        li.appendChild(btn);
        ul.appendChild(li);
      });
      var ready = state.models.filter(function (m) { return m.state === 'READY'; }).length;
      $('conn').textContent = state.models.length + ' models, ' + ready + ' ready';
      var want = (location.hash.match(/model=([^&]+)/) || [])[1];
      if (want) selectModel(decodeURIComponent(want));
    }).catch(function (e) {
      if (e.status !== 401) $('conn').textContent = 'Cannot list models: ' + e.message;
    });
  }

  function selectModel(name) {
    Array.prototype.forEach.call(document.querySelectorAll('#models button'), function (b) {
      b.setAttribute('aria-pressed', b.getAttribute('data-model') === name ? 'true' : 'false');
    });
    state.model = name;
    state.lastRequest = null;
    $('sample-out').hidden = true;
    $('cal-out').hidden = true;
    setStatus('sample-status', '');
    setStatus('cal-status', '');
    history.replaceState(null, '', '#model=' + encodeURIComponent(name));
    var enc = encodeURIComponent(name);
    return Promise.all([
      api('/v1/models/' + enc).then(json),
      api('/v1/models/' + enc + '/certificate').then(json).catch(function () { return null; }),
    ]).then(function (res) {
      if (state.model !== name) return;
      state.meta = res[0];
      showModel(res[0], res[1]);
    }).catch(function (e) {
      if (e.status !== 401) $('conn').textContent = 'Cannot read ' + name + ': ' + e.message;
    });
  }

  function showModel(m, cert) {
    $('model').hidden = false;
    $('model-h').textContent = m.name + ' (version ' + m.version + ')';
    $('model-desc').textContent = m.description || '';
    var dl = $('model-meta');
    dl.textContent = '';
    var names = m.names || {};
    var rows = [
      ['kind', m.kind],
      ['dims', 'x ' + m.dims.x + ', y ' + m.dims.y + ', z ' + m.dims.z +
               (m.dims.pad_x || m.dims.pad_y ? ' (pad x ' + m.dims.pad_x + ', pad y ' + m.dims.pad_y + ')' : '')],
      ['x names', (names.x || []).join(', ')],
      ['y names', (names.y || []).join(', ') || '—'],
      ['operations', (m.operations || []).join(', ')],
      ['parameters', m.parameters],
      ['blocks', m.n_blocks],
      ['numeric inverse', m.numeric_inverse ? 'yes (i-ResNet fixed point)' : 'no'],
      ['kernels', m.kernels],
      ['sha256', m.sha256],
    ];
    rows.forEach(function (r) {
      dl.appendChild(el('dt', null, r[0]));
      dl.appendChild(el('dd', null, r[1] === undefined ? '—' : r[1]));
    });
    var c = cert || m.certificate || {};
    $('cert-summary').textContent = (c.invertible ? 'invertible' : 'not invertible') + ', ' +
      (c.guarantee || 'none') + (c.certified ? ', certified' : '');
    var tb = $('cert-table').tBodies[0];
    tb.textContent = '';
    (cert && cert.blocks || []).forEach(function (b) {
      var tr = el('tr');
      tr.appendChild(numCell(b.index));
      tr.appendChild(el('td', {class: 'text'}, b.type));
      tr.appendChild(el('td', {class: 'text'}, b.guarantee));
      tr.appendChild(numCell(b.lipschitz));
      tr.appendChild(numCell(b.lipschitz_inverse));
      tr.appendChild(el('td', {class: 'text'}, b.reason || ''));
      tb.appendChild(tr);
    });
    var blocks = m.blocks;
    var nb = Array.isArray(blocks) ? blocks.length : (blocks && blocks.layers ? blocks.layers.length : 0);
    $('blocks-count').textContent = blocks && blocks.components ? blocks.components + ' mixture components'
      : nb + (Array.isArray(blocks) ? ' blocks' : ' layers');
    $('blocks').textContent = JSON.stringify(blocks, null, 2);

    var canSample = (m.operations || []).indexOf('sample') >= 0;
    $('posterior').hidden = !canSample;
    $('calibration').hidden = !canSample;
    if (!canSample) {
      $('model-desc').textContent = (m.description || '') + ' — a ' + m.kind +
        ' model has no posterior to sample (operations: ' + (m.operations || []).join(', ') + ').';
      return;
    }
    buildYInputs(m);
    updateCurl();
  }

  function buildYInputs(m) {
    var box = $('y-inputs');
    box.textContent = '';
    var ny = m.dims.y;
    $('y-fields').hidden = ny === 0;
    var names = (m.names && m.names.y) || [];
    for (var i = 0; i < ny; i++) {
      var lab = el('label');
      lab.appendChild(document.createTextNode(names[i] || ('y' + i)));
      var inp = el('input', {type: 'number', 'data-y': String(i)});
      inp.step = 'any';
      inp.required = true;
      inp.value = '0';
      inp.name = names[i] || ('y' + i);
      inp.addEventListener('input', function () { $('y-test').value = ''; updateCurl(); });
      lab.appendChild(inp);
      box.appendChild(lab);
    }
    buildTestVectors(m);
  }

  // The Test vector choice: one option per row of the metadata's test_vectors (the row's y
  // in the option's text), hidden when the model has none.
  function buildTestVectors(m) {
    var sel = $('y-test');
    while (sel.options.length > 1) sel.remove(1);
    sel.value = '';
    var tv = m.test_vectors;
    var rows = tv && Array.isArray(tv.y) && m.dims.y > 0 ? tv.y : [];
    var names = (m.names && m.names.y) || [];
    rows.forEach(function (row, i) {
      var text = (i + 1) + ': ' + row.map(function (v, k) { return (names[k] || 'y' + k) + ' ' + fmt(v); }).join(', ');
      sel.appendChild(el('option', {value: String(i)}, text));
    });
    $('y-test-row').hidden = rows.length === 0;
    $('y-test-help').hidden = rows.length === 0;
  }

  // The chosen test vector: {index, y, x} or null.
  function chosenTestVector() {
    var v = $('y-test').value, tv = state.meta && state.meta.test_vectors;
    if (v === '' || !tv) return null;
    var i = Number(v);
    return tv.y[i] && tv.x[i] ? {index: i, y: tv.y[i], x: tv.x[i]} : null;
  }

  // Fill the y fields from the chosen test vector.
  function useTestVector() {
    var t = chosenTestVector();
    if (!t) {
      setStatus('sample-status', 'No test vector: type or paste y.');
      updateCurl();
      return;
    }
    var ins = yInputs();
    ins.forEach(function (inp, k) { inp.value = String(t.y[k]); inp.removeAttribute('aria-invalid'); });
    setStatus('sample-status', 'Filled y from test vector ' + (t.index + 1) + '; the plot will mark its x.');
    updateCurl();
  }

  // ---- the sample request -------------------------------------------------------------

  function yInputs() { return Array.prototype.slice.call(document.querySelectorAll('#y-inputs input')); }

  function parseRow(text) {
    return text.trim().split(/[\s,;]+/).filter(function (s) { return s.length; }).map(Number);
  }

  function pasteRow() {
    var vals = parseRow($('y-paste').value);
    var ins = yInputs();
    if (vals.length !== ins.length || vals.some(function (v) { return !isFinite(v); })) {
      setStatus('sample-status', 'The pasted row has ' + vals.length + ' numbers; this model ' +
        'takes ' + ins.length + ' (' + ins.map(function (i) { return i.name; }).join(', ') + ').', true);
      $('y-paste').setAttribute('aria-invalid', 'true');
      return;
    }
    $('y-paste').removeAttribute('aria-invalid');
    $('y-test').value = '';
    ins.forEach(function (inp, i) { inp.value = String(vals[i]); });
    setStatus('sample-status', 'Filled ' + ins.length + ' fields.');
    updateCurl();
  }

  // The JSON body from the form, or throws an Error naming the field.
  function sampleBody(outputs, seedOverride) {
    var body = {};
    var m = state.meta;
    if (m.dims.y > 0) {
      body.y = [yInputs().map(function (inp) {
        var v = Number(inp.value);
        if (inp.value.trim() === '' || !isFinite(v)) throw fieldError(inp, inp.name + ' must be a number');
        return v;
      })];
    }
    var ns = $('num-samples');
    var n = Number(ns.value);
    if (!Number.isInteger(n) || n < 1) throw fieldError(ns, 'num_samples must be a whole number >= 1');
    body.num_samples = n;
    var seed = seedOverride !== undefined && seedOverride !== null ? seedOverride : $('seed').value.trim();
    if (seed !== '') {
      var s = Number(seed);
      if (!Number.isInteger(s) || s < 0) throw fieldError($('seed'), 'seed must be a whole number >= 0');
      body.seed = s;
    }
    var t = Number($('temperature').value);
    if ($('temperature').value.trim() === '' || !isFinite(t) || t < 0)
      throw fieldError($('temperature'), 'temperature must be a number >= 0');
    body.temperature = t;
    if (outputs) body.outputs = outputs;
    if (outputs && outputs.indexOf('summary') >= 0) {
      var q = parseRow($('quantiles').value);
      if (q.some(function (v) { return !isFinite(v) || v < 0 || v > 1; }))
        throw fieldError($('quantiles'), 'quantiles must be numbers in [0, 1]');
      if (q.length) body.quantiles = q;
    }
    return body;
  }

  function fieldError(inp, msg) {
    inp.setAttribute('aria-invalid', 'true');
    var e = new Error(msg);
    e.input = inp;
    return e;
  }

  function clearInvalid() {
    Array.prototype.forEach.call(document.querySelectorAll('[aria-invalid]'), function (i) {
      i.removeAttribute('aria-invalid');
    });
  }

  function sampleOutputs() {
    var o = ['samples', 'summary'];
    if (state.meta.kind === 'inn') o.push('resimulation');
    return o;
  }

  function shellQuote(s) { return "'" + s.replace(/'/g, "'\\''") + "'"; }

  function curlFor(path, body, accept) {
    var parts = ['curl -s ' + shellQuote(location.origin + path),
                 "-H 'Content-Type: application/json'"];
    if (accept) parts.push(shellQuote('Accept: ' + accept));
    if (token()) parts.push('-H "Authorization: Bearer $INNSERVE_TOKEN"');
    parts.push('-d ' + shellQuote(JSON.stringify(body)));
    return parts.join(' ');
  }

  function updateCurl() {
    if (!state.meta) return;
    var path = '/v1/models/' + encodeURIComponent(state.meta.name) + '/sample';
    var seed = state.lastRequest ? state.lastSeed : null;
    try {
      $('curl').value = curlFor(path, sampleBody(sampleOutputs(), seed));
    } catch (e) {
      $('curl').value = '# ' + e.message;
    }
  }

  function runSample(ev) {
    ev.preventDefault();
    clearInvalid();
    var m = state.meta;
    var body;
    try { body = sampleBody(sampleOutputs()); } catch (e) {
      setStatus('sample-status', e.message, true);
      if (e.input) e.input.focus();
      return;
    }
    var path = '/v1/models/' + encodeURIComponent(m.name) + '/sample';
    var truth = chosenTestVector();
    var asJob = $('sample-job').checked;
    $('sample-run').disabled = true;
    $('sample-progress').hidden = true;
    setStatus('sample-status', 'Sampling ' + body.num_samples + '…');
    var t0 = performance.now();
    runMaybeJob(path, body, asJob, PANELS.sample)
      .then(function (a) {
        var tNet = performance.now() - t0;
        if (state.model !== m.name) return;
        state.lastRequest = {path: path, body: body, truth: truth};
        state.lastSeed = a.seed;
        if (body.seed === undefined) $('seed').placeholder = 'drawn: ' + a.seed;
        showSamples(a, m, tNet, truth);
        updateCurl();
      }).catch(function (e) {
        if (e.status !== 401 && !e.cancelled) setStatus('sample-status', e.message, true);
      }).then(function () { $('sample-run').disabled = false; });
  }

  // A row of x as its d values: an image model's rows are nested [C][H][W] (docs/api.md,
  // Image models) and are read row-major; other rows are returned as they are.
  function flatRow(v) {
    if (!Array.isArray(v) || !Array.isArray(v[0])) return v;
    var out = [];
    (function walk(a) {
      for (var i = 0; i < a.length; i++) {
        if (Array.isArray(a[i])) walk(a[i]);
        else out.push(a[i]);
      }
    })(v);
    return out;
  }

  // truth: the test vector ({index, y, x}) whose y was sampled, or null.
  function showSamples(a, m, tNet, truth) {
    $('sample-out').hidden = false;
    var S = a.samples[0];
    var n = S.length, d = m.dims.x;
    var cols = [];
    for (var k = 0; k < d; k++) cols.push(new Float32Array(n));
    if (truth) truth = {index: truth.index, y: truth.y, x: flatRow(truth.x)};
    for (var i = 0; i < n; i++) {
      var row = flatRow(S[i]);
      for (k = 0; k < d; k++) cols[k][i] = row[k];
    }
    var names = (m.names && m.names.x) || [];
    var marks = null;
    if (a.summary) {
      marks = {mean: flatRow(a.summary.mean[0]), quantiles: []};
      for (var q in a.summary.quantiles) marks.quantiles.push(flatRow(a.summary.quantiles[q][0]));
    }
    if (truth) {
      marks = marks || {mean: null, quantiles: []};
      marks.truth = truth.x;
    }
    var canvas = $('corner');
    var ms = drawCorner(canvas, cols, names, marks, $('sample-out').clientWidth || 800);
    var truthText = truth ? 'the x of test vector ' + (truth.index + 1) + ' (' +
      truth.x.map(function (v, k) { return (names[k] || 'x' + k) + ' ' + fmt(v); }).join(', ') + ')' : '';
    canvas.setAttribute('aria-label', 'Corner plot of ' + n + ' posterior samples over ' + d +
      ' parameters (' + names.join(', ') + '): histograms on the diagonal, pairwise densities below it' +
      (truth ? '; orange lines and dots mark ' + truthText : '') + '. The summary table below gives the numbers.');
    canvas.setAttribute('data-draw-ms', ms.toFixed(1));
    if (truth) canvas.setAttribute('data-truth', JSON.stringify(truth.x));
    else canvas.removeAttribute('data-truth');
    $('corner-cap').textContent = n + ' samples, seed ' + a.seed + ', temperature ' + a.temperature +
      '. Answered in ' + Math.round(tNet) + ' ms, drawn in ' + ms.toFixed(1) + ' ms.';
    var lg = $('corner-legend');
    lg.textContent = '';
    var item = function (cls, text) {
      var li = el('li', {class: cls});
      li.appendChild(el('span', {class: 'swatch', 'aria-hidden': 'true'}));
      li.appendChild(document.createTextNode(text));
      lg.appendChild(li);
    };
    if (marks && marks.mean) {
      item('mean', 'mean (solid red)');
      if (marks.quantiles.length) item('quantile', 'quantiles (dashed red)');
    }
    if (truth) item('truth', 'x of test vector ' + (truth.index + 1) + ' (orange)');
    showSummary(a, names, d);
    var rs = $('resim');
    if (a.resimulation) {
      rs.hidden = false;
      rs.textContent = 'Re-simulation error (RMSE of f(x) against y over the samples): ' +
        fmt(a.resimulation.rmse[0]);
      rs.setAttribute('data-value', String(a.resimulation.rmse[0]));
    } else {
      rs.hidden = true;
    }
    setStatus('sample-status', 'Drew ' + n + ' samples (seed ' + a.seed + ').');
  }

  function showSummary(a, names, d) {
    var t = $('summary');
    var head = t.tHead, body = t.tBodies[0];
    head.textContent = '';
    body.textContent = '';
    if (!a.summary) return;
    var s = a.summary;
    var qs = Object.keys(s.quantiles || {});
    var hr = el('tr');
    hr.appendChild(el('th', {scope: 'col'}, 'parameter'));
    ['mean', 'std'].concat(qs.map(function (q) { return 'q' + q; })).concat(['MAP'])
      .forEach(function (h) { hr.appendChild(el('th', {scope: 'col'}, h)); });
    head.appendChild(hr);
    var mean = flatRow(s.mean[0]), std = flatRow(s.std[0]), mp = s.map ? flatRow(s.map[0]) : null;
    var qv = {};
    qs.forEach(function (q) { qv[q] = flatRow(s.quantiles[q][0]); });
    for (var k = 0; k < d; k++) {
      var tr = el('tr', {'data-dim': String(k)});
      tr.appendChild(el('th', {scope: 'row'}, names[k] || ('x' + k)));
      var mc = numCell(mean[k]); mc.setAttribute('data-stat', 'mean'); tr.appendChild(mc);
      var sc = numCell(std[k]); sc.setAttribute('data-stat', 'std'); tr.appendChild(sc);
      qs.forEach(function (q) {
        var c = numCell(qv[q][k]); c.setAttribute('data-stat', 'q' + q); tr.appendChild(c);
      });
      var map = mp ? mp[k] : null;
      var pc = numCell(map); pc.setAttribute('data-stat', 'map'); tr.appendChild(pc);
      body.appendChild(tr);
    }
  }

  // ---- downloads and the curl command -------------------------------------------------

  function download(kind) {
    var req = state.lastRequest;
    if (!req) return;
    var accept = kind === 'csv' ? 'text/csv' : 'application/x-npy';
    var body = JSON.parse(JSON.stringify(req.body));
    body.seed = state.lastSeed;
    body.outputs = ['samples'];
    delete body.quantiles;
    setStatus('dl-status', 'Preparing ' + kind.toUpperCase() + '…');
    api(req.path, {method: 'POST', headers: {'Content-Type': 'application/json', 'Accept': accept},
                   body: JSON.stringify(body)})
      .then(function (r) {
        if (!r.ok) return json(r);
        return r.blob();
      }).then(function (blob) {
        var url = URL.createObjectURL(blob);
        var a = el('a', {href: url});
        a.download = state.model + '-seed' + state.lastSeed + '.' + kind;
        document.body.appendChild(a);
        a.click();
        a.remove();
        setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
        setStatus('dl-status', 'Saved ' + a.download + ' (' + blob.size + ' bytes).');
      }).catch(function (e) {
        if (e.status !== 401) setStatus('dl-status', e.message, true);
      });
  }

  function copyCurl() {
    var text = $('curl').value;
    var done = function () { setStatus('curl-status', 'Copied.'); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(); });
    } else {
      fallbackCopy();
    }
    function fallbackCopy() {
      var ta = $('curl');
      ta.focus();
      ta.select();
      var ok = false;
      try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
      setStatus('curl-status', ok ? 'Copied.' : 'Selected: press Ctrl+C to copy.');
    }
  }

  // ---- plotting -----------------------------------------------------------------------

  var DPR = function () { return Math.min(window.devicePixelRatio || 1, 2); };

  function sizeCanvas(canvas, w, h) {
    var r = DPR();
    canvas.width = Math.round(w * r);
    canvas.height = Math.round(h * r);
    canvas.style.width = w + 'px';
    canvas.style.height = h + 'px';
    var ctx = canvas.getContext('2d');
    ctx.setTransform(r, 0, 0, r, 0, 0);
    return ctx;
  }

  // Plot range of one column: its 0.1% and 99.9% quantiles widened by 5%.
  function range(col) {
    var s = Float32Array.from(col).sort();
    var n = s.length;
    var lo = s[Math.floor(0.001 * (n - 1))], hi = s[Math.ceil(0.999 * (n - 1))];
    if (!isFinite(lo) || !isFinite(hi)) { lo = -1; hi = 1; }
    if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
    var pad = 0.05 * (hi - lo);
    return [lo - pad, hi + pad];
  }

  // A few round tick values inside [lo, hi].
  function ticks(lo, hi, want) {
    var span = hi - lo, step = Math.pow(10, Math.floor(Math.log10(span / want)));
    var err = want / (span / step);
    if (err <= 0.15) step *= 10; else if (err <= 0.35) step *= 5; else if (err <= 0.75) step *= 2;
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step)
      out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return out;
  }

  function tickLabel(v) { return String(Number(v.toPrecision(3))); }

  // The colour of a known x on the corner plot (apart from the blues and the red marks).
  var TRUTH = '#e66100';

  // white -> deep blue, 256 entries of RGBA.
  var LUT = (function () {
    var stops = [[255, 255, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
    var lut = new Uint8ClampedArray(256 * 4);
    for (var i = 0; i < 256; i++) {
      var t = i / 255 * (stops.length - 1), k = Math.min(Math.floor(t), stops.length - 2), f = t - k;
      for (var c = 0; c < 3; c++) lut[i * 4 + c] = stops[k][c] + (stops[k + 1][c] - stops[k][c]) * f;
      lut[i * 4 + 3] = 255;
    }
    return lut;
  })();

  // The corner plot of cols (one Float32Array per dimension, equal lengths) on canvas,
  // cssWidth pixels wide at most.  marks: {mean: [d] or null, quantiles: [[d], ...],
  // truth: [d] (optional: a known x, such as a test vector's, drawn in orange and kept
  // inside the ranges)} or null.
  // Returns the milliseconds it took.
  function drawCorner(canvas, cols, names, marks, cssWidth) {
    var t0 = performance.now();
    var d = cols.length, n = d ? cols[0].length : 0;
    var left = 46, bottom = 44, top = 8, right = 8;
    var panel = Math.max(44, Math.min(200, Math.floor((Math.min(cssWidth, 1100) - left - right) / Math.max(d, 1))));
    var W = left + right + panel * d, H = top + bottom + panel * d;
    var ctx = sizeCanvas(canvas, W, H);
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, W, H);
    var truth = marks && marks.truth ? marks.truth : null;
    var rg = cols.map(function (c, k) {
      var r = range(c);
      if (truth && isFinite(truth[k])) {   // widen to show the truth with a margin
        var pad = 0.05 * (r[1] - r[0]);
        if (truth[k] - pad < r[0]) r[0] = truth[k] - pad;
        if (truth[k] + pad > r[1]) r[1] = truth[k] + pad;
      }
      return r;
    });
    var B2 = Math.max(8, Math.min(48, Math.floor(panel / 3)));
    var B1 = Math.max(10, Math.min(60, Math.floor(panel / 3)));
    var gap = 3, inner = panel - gap;
    // one offscreen B2 x B2 image reused for every 2-D panel
    var off = document.createElement('canvas');
    off.width = B2; off.height = B2;
    var octx = off.getContext('2d');
    var img = octx.createImageData(B2, B2);
    var counts = new Uint32Array(B2 * B2);
    var bx = new Int32Array(n * d); // every sample's bin index per dimension (-1: outside)
    var b1x = new Int32Array(n * d);
    for (var k = 0; k < d; k++) {
      var c = cols[k], lo = rg[k][0], sc2 = B2 / (rg[k][1] - lo), sc1 = B1 / (rg[k][1] - lo);
      for (var i = 0; i < n; i++) {
        var u = (c[i] - lo);
        var b = Math.floor(u * sc2);
        bx[k * n + i] = b >= 0 && b < B2 ? b : -1;
        var b1 = Math.floor(u * sc1);
        b1x[k * n + i] = b1 >= 0 && b1 < B1 ? b1 : -1;
      }
    }
    ctx.imageSmoothingEnabled = false;
    for (var r = 0; r < d; r++) {          // row: y dimension
      for (var q = 0; q < r; q++) {        // column: x dimension
        counts.fill(0);
        var ox = q * n, oy = r * n, max = 0;
        for (i = 0; i < n; i++) {
          var a1 = bx[ox + i], a2 = bx[oy + i];
          if (a1 < 0 || a2 < 0) continue;
          var idx = (B2 - 1 - a2) * B2 + a1;
          var v = ++counts[idx];
          if (v > max) max = v;
        }
        var data = img.data, inv = max ? 1 / max : 0;
        for (var p = 0; p < B2 * B2; p++) {
          var li = Math.round(Math.sqrt(counts[p] * inv) * 255) * 4;
          data[p * 4] = LUT[li]; data[p * 4 + 1] = LUT[li + 1]; data[p * 4 + 2] = LUT[li + 2]; data[p * 4 + 3] = 255;
        }
        octx.putImageData(img, 0, 0);
        var px = left + q * panel, py = top + r * panel;
        ctx.drawImage(off, px, py, inner, inner);
        ctx.strokeStyle = '#c8ced6';
        ctx.lineWidth = 1;
        ctx.strokeRect(px + 0.5, py + 0.5, inner - 1, inner - 1);
        if (truth) {   // crosshair and dot at the truth
          var tx = px + (truth[q] - rg[q][0]) / (rg[q][1] - rg[q][0]) * inner;
          var ty = py + inner - (truth[r] - rg[r][0]) / (rg[r][1] - rg[r][0]) * inner;
          ctx.save();
          ctx.beginPath();
          ctx.rect(px, py, inner, inner);
          ctx.clip();
          ctx.strokeStyle = TRUTH;
          ctx.lineWidth = 1.5;
          ctx.beginPath();
          ctx.moveTo(tx, py); ctx.lineTo(tx, py + inner);
          ctx.moveTo(px, ty); ctx.lineTo(px + inner, ty);
          ctx.stroke();
          ctx.beginPath();
          ctx.arc(tx, ty, 4, 0, 2 * Math.PI);
          ctx.fillStyle = TRUTH;
          ctx.fill();
          ctx.strokeStyle = '#fff';
          ctx.lineWidth = 1.5;
          ctx.stroke();
          ctx.restore();
        }
      }
    }
    // diagonal: 1-D histograms with mean and quantile lines
    var h1 = new Uint32Array(B1);
    for (k = 0; k < d; k++) {
      h1.fill(0);
      var mx = 0, o = k * n;
      for (i = 0; i < n; i++) { var bb = b1x[o + i]; if (bb >= 0 && ++h1[bb] > mx) mx = h1[bb]; }
      px = left + k * panel; py = top + k * panel;
      ctx.strokeStyle = '#c8ced6';
      ctx.strokeRect(px + 0.5, py + 0.5, inner - 1, inner - 1);
      ctx.beginPath();
      ctx.moveTo(px, py + inner);
      for (var j = 0; j < B1; j++) {
        var hy = py + inner - (mx ? h1[j] / mx : 0) * (inner - 4);
        ctx.lineTo(px + j * inner / B1, hy);
        ctx.lineTo(px + (j + 1) * inner / B1, hy);
      }
      ctx.lineTo(px + inner, py + inner);
      ctx.closePath();
      ctx.fillStyle = 'rgba(33,113,181,0.35)';
      ctx.fill();
      ctx.strokeStyle = '#08306b';
      ctx.stroke();
      if (marks) {
        var toX = function (val) { return px + (val - rg[k][0]) / (rg[k][1] - rg[k][0]) * inner; };
        ctx.save();
        ctx.beginPath();
        ctx.rect(px, py, inner, inner);
        ctx.clip();
        ctx.strokeStyle = '#b42318';
        ctx.setLineDash([4, 3]);
        marks.quantiles.forEach(function (qv) {
          ctx.beginPath(); ctx.moveTo(toX(qv[k]), py); ctx.lineTo(toX(qv[k]), py + inner); ctx.stroke();
        });
        ctx.setLineDash([]);
        ctx.lineWidth = 1.5;
        if (marks.mean) {
          ctx.beginPath(); ctx.moveTo(toX(marks.mean[k]), py); ctx.lineTo(toX(marks.mean[k]), py + inner); ctx.stroke();
        }
        if (truth) {
          ctx.strokeStyle = TRUTH;
          ctx.lineWidth = 2.5;
          ctx.beginPath(); ctx.moveTo(toX(truth[k]), py); ctx.lineTo(toX(truth[k]), py + inner); ctx.stroke();
        }
        ctx.restore();
      }
    }
    // axes: ticks under the bottom row, left of the first column; names
    ctx.fillStyle = '#1b1f24';
    ctx.strokeStyle = '#57606a';
    ctx.lineWidth = 1;
    var font = panel < 70 ? 9 : 11;
    ctx.font = font + 'px system-ui, sans-serif';
    for (k = 0; k < d; k++) {
      var lo2 = rg[k][0], span = rg[k][1] - lo2;
      var tv = ticks(lo2, rg[k][1], panel < 70 ? 2 : 3);
      var x0 = left + k * panel, yb = top + d * panel;
      ctx.textAlign = 'center';
      ctx.textBaseline = 'top';
      tv.forEach(function (v) {
        var x = x0 + (v - lo2) / span * inner;
        ctx.beginPath(); ctx.moveTo(x, yb - gap); ctx.lineTo(x, yb + 1); ctx.stroke();
        ctx.fillText(tickLabel(v), x, yb + 2);
      });
      ctx.font = 'bold ' + (font + 1) + 'px system-ui, sans-serif';
      ctx.fillText(names[k] || ('x' + k), x0 + inner / 2, yb + font + 6, panel - 2);
      ctx.font = font + 'px system-ui, sans-serif';
      if (k > 0) {   // the y axis of row k (its first panel is 2-D)
        var y0 = top + k * panel;
        ctx.textAlign = 'right';
        ctx.textBaseline = 'middle';
        tv.forEach(function (v) {
          var y = y0 + inner - (v - lo2) / span * inner;
          ctx.beginPath(); ctx.moveTo(left - 3, y); ctx.lineTo(left, y); ctx.stroke();
          ctx.fillText(tickLabel(v), left - 4, y);
        });
        ctx.save();
        ctx.translate(10, y0 + inner / 2);
        ctx.rotate(-Math.PI / 2);
        ctx.textAlign = 'center';
        ctx.font = 'bold ' + (font + 1) + 'px system-ui, sans-serif';
        ctx.fillText(names[k] || ('x' + k), 0, 0, panel - 2);
        ctx.restore();
        ctx.font = font + 'px system-ui, sans-serif';
      }
    }
    return performance.now() - t0;
  }

  // A frame with axes [x0,x1] x [y0,y1] at (px,py,w,h); returns mappers.
  function frame(ctx, px, py, w, h, x0, x1, y0, y1, xlab, ylab, title) {
    ctx.strokeStyle = '#57606a';
    ctx.lineWidth = 1;
    ctx.strokeRect(px + 0.5, py + 0.5, w, h);
    var X = function (v) { return px + (v - x0) / (x1 - x0) * w; };
    var Y = function (v) { return py + h - (v - y0) / (y1 - y0) * h; };
    ctx.fillStyle = '#1b1f24';
    ctx.font = '10px system-ui, sans-serif';
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    ticks(x0, x1, 4).forEach(function (v) { ctx.fillText(tickLabel(v), X(v), py + h + 3); });
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    ticks(y0, y1, 4).forEach(function (v) { ctx.fillText(tickLabel(v), px - 3, Y(v)); });
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    if (xlab) ctx.fillText(xlab, px + w / 2, py + h + 16);
    if (title) { ctx.font = 'bold 11px system-ui, sans-serif'; ctx.textBaseline = 'bottom'; ctx.fillText(title, px + w / 2, py - 3); }
    if (ylab) {
      ctx.save(); ctx.translate(px - 34, py + h / 2); ctx.rotate(-Math.PI / 2);
      ctx.font = '10px system-ui, sans-serif'; ctx.textBaseline = 'middle'; ctx.fillText(ylab, 0, 0); ctx.restore();
    }
    return {X: X, Y: Y};
  }

  var PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2',
                 '#7f7f7f', '#bcbd22', '#17becf'];

  // Rank histograms: counts D x B with bin edges; the band holds 99% of a uniform's counts.
  function drawRanks(canvas, hist, n, names, cssWidth) {
    var t0 = performance.now();
    var D = hist.counts.length, B = hist.counts[0] ? hist.counts[0].length : 0;
    var per = Math.max(1, Math.min(D, Math.floor(Math.min(cssWidth, 1100) / 200)));
    var rows = Math.ceil(D / per), pw = 150, ph = 100, mx = 50, my = 34;
    var W = per * (pw + mx) + 10, H = rows * (ph + my + 20) + 6;
    var ctx = sizeCanvas(canvas, W, H);
    ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, W, H);
    var p = 1 / B, mean = n * p, sd = Math.sqrt(n * p * (1 - p));
    var lo = Math.max(0, mean - 2.576 * sd), hi = mean + 2.576 * sd;
    for (var k = 0; k < D; k++) {
      var cts = hist.counts[k], top = 0;
      for (var b = 0; b < B; b++) top = Math.max(top, cts[b]);
      top = Math.max(top, hi) * 1.1;
      var px = mx + (k % per) * (pw + mx), py = 20 + Math.floor(k / per) * (ph + my + 20);
      // x: the rank, from the bin edges when the answer has them (else the bin number)
      var E = hist.edges && hist.edges.length === B + 1 ? hist.edges : null;
      var ex = function (i) { return E ? E[i] : i; };
      var f = frame(ctx, px, py, pw, ph, ex(0), ex(B), 0, top, E ? 'rank' : 'rank bin', 'count', names[k] || ('x' + k));
      ctx.fillStyle = 'rgba(150,150,150,0.3)';
      ctx.fillRect(px, f.Y(hi), pw, f.Y(lo) - f.Y(hi));
      ctx.fillStyle = '#2171b5';
      for (b = 0; b < B; b++)
        ctx.fillRect(f.X(ex(b)) + 0.5, f.Y(cts[b]), Math.max(1, f.X(ex(b + 1)) - f.X(ex(b)) - 1), f.Y(0) - f.Y(cts[b]));
      ctx.strokeStyle = '#444'; ctx.setLineDash([3, 3]);
      ctx.beginPath(); ctx.moveTo(px, f.Y(mean)); ctx.lineTo(px + pw, f.Y(mean)); ctx.stroke();
      ctx.setLineDash([]);
    }
    return performance.now() - t0;
  }

  function drawCoverage(canvas, cov, names) {
    var pw = 340, ph = 260, px = 56, py = 24;
    var ctx = sizeCanvas(canvas, pw + px + 170, ph + py + 44);
    ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, pw + px + 170, ph + py + 44);
    var f = frame(ctx, px, py, pw, ph, 0, 1, 0, 1, 'nominal coverage (credibility level)', 'empirical coverage', 'Expected coverage');
    var L = cov.levels;
    if (cov.lower && cov.upper) {
      ctx.fillStyle = 'rgba(150,150,150,0.3)';
      ctx.beginPath();
      L.forEach(function (a, i) { (i ? ctx.lineTo : ctx.moveTo).call(ctx, f.X(a), f.Y(cov.upper[i])); });
      for (var i = L.length - 1; i >= 0; i--) ctx.lineTo(f.X(L[i]), f.Y(cov.lower[i]));
      ctx.closePath(); ctx.fill();
    }
    ctx.strokeStyle = '#444'; ctx.setLineDash([4, 4]);
    ctx.beginPath(); ctx.moveTo(f.X(0), f.Y(0)); ctx.lineTo(f.X(1), f.Y(1)); ctx.stroke(); ctx.setLineDash([]);
    var legend = [];
    function curve(ys, color, width, label) {
      ctx.strokeStyle = color; ctx.lineWidth = width;
      ctx.beginPath();
      L.forEach(function (a, i) { (i ? ctx.lineTo : ctx.moveTo).call(ctx, f.X(a), f.Y(ys[i])); });
      ctx.stroke();
      legend.push([color, width, label]);
    }
    if (cov.central && cov.central.empirical)
      cov.central.empirical.forEach(function (ys, k) { curve(ys, PALETTE[k % PALETTE.length], 1.2, 'central: ' + (names[k] || 'x' + k)); });
    if (cov.hpd && cov.hpd.empirical) curve(cov.hpd.empirical, '#000', 2.5, 'HPD (joint)');
    ctx.lineWidth = 1;
    ctx.font = '11px system-ui, sans-serif'; ctx.textAlign = 'left'; ctx.textBaseline = 'middle';
    legend.forEach(function (l, i) {
      var y = py + 8 + i * 16;
      ctx.strokeStyle = l[0]; ctx.lineWidth = l[1];
      ctx.beginPath(); ctx.moveTo(px + pw + 12, y); ctx.lineTo(px + pw + 32, y); ctx.stroke();
      ctx.fillStyle = '#1b1f24'; ctx.fillText(l[2], px + pw + 36, y);
    });
    ctx.lineWidth = 1;
  }

  function drawTarp(canvas, tarp) {
    var pw = 300, ph = 260, px = 56, py = 24;
    var ctx = sizeCanvas(canvas, pw + px + 20, ph + py + 44);
    ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, pw + px + 20, ph + py + 44);
    var f = frame(ctx, px, py, pw, ph, 0, 1, 0, 1, 'credibility level α', 'expected coverage (ECP)', 'TARP');
    ctx.strokeStyle = '#444'; ctx.setLineDash([4, 4]);
    ctx.beginPath(); ctx.moveTo(f.X(0), f.Y(0)); ctx.lineTo(f.X(1), f.Y(1)); ctx.stroke(); ctx.setLineDash([]);
    ctx.strokeStyle = '#d62728'; ctx.lineWidth = 2;
    ctx.beginPath();
    tarp.alpha.forEach(function (a, i) { (i ? ctx.lineTo : ctx.moveTo).call(ctx, f.X(a), f.Y(tarp.ecp[i])); });
    ctx.stroke();
    ctx.lineWidth = 1;
  }

  // ---- calibration --------------------------------------------------------------------

  // Parses an NPY (format 1.0/2.0/3.0, little-endian f4/f8/i4/i8, C order, 1-D or 2-D) into
  // rows of numbers.
  function parseNpy(buf) {
    var u8 = new Uint8Array(buf);
    var magic = String.fromCharCode.apply(null, u8.subarray(1, 6));
    if (u8[0] !== 0x93 || magic !== 'NUMPY') throw new Error('not an NPY file');
    var major = u8[6], dv = new DataView(buf);
    var hlen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
    var hoff = major === 1 ? 10 : 12;
    var header = new TextDecoder().decode(u8.subarray(hoff, hoff + hlen));
    var descr = (header.match(/'descr':\s*'([^']+)'/) || [])[1];
    if (/'fortran_order':\s*True/.test(header)) throw new Error('NPY in Fortran order: save it in C order');
    var shape = ((header.match(/'shape':\s*\(([^)]*)\)/) || [])[1] || '').split(',')
      .map(function (s) { return s.trim(); }).filter(function (s) { return s; }).map(Number);
    var T = {'<f4': Float32Array, '<f8': Float64Array, '<i4': Int32Array, '|i1': Int8Array}[descr];
    var off = hoff + hlen;
    var total = shape.reduce(function (a, b) { return a * b; }, 1);
    var flat;
    if (T) flat = new T(buf.slice(off, off + total * T.BYTES_PER_ELEMENT));
    else if (descr === '<i8') {
      flat = new Float64Array(total);
      for (var i = 0; i < total; i++) flat[i] = Number(dv.getBigInt64(off + 8 * i, true));
    } else throw new Error('NPY dtype ' + descr + ' is not supported (use float32 or float64)');
    if (shape.length === 1) shape = [shape[0], 1];
    if (shape.length !== 2) throw new Error('NPY of shape (' + shape.join(', ') + '): want (N, columns)');
    var rows = [];
    for (var r = 0; r < shape[0]; r++) rows.push(Array.from(flat.subarray(r * shape[1], (r + 1) * shape[1])));
    return {header: null, rows: rows};
  }

  function parseCsv(text) {
    var lines = text.split(/\r?\n/).filter(function (l) { return l.trim().length && l.trim()[0] !== '#'; });
    var header = null;
    if (lines.length && lines[0].split(',').some(function (f) { var t = f.trim(); return t !== '' && !isFinite(Number(t)); })) {
      header = lines.shift().split(',').map(function (s) { return s.trim().replace(/^"|"$/g, ''); });
    }
    var rows = lines.map(function (l, i) {
      var v = l.split(/[,\t;]/).map(function (s) { return Number(s.trim()); });
      if (v.some(function (x) { return !isFinite(x); })) throw new Error('line ' + (i + 1 + (header ? 1 : 0)) + ' holds a value that is not a number');
      return v;
    });
    return {header: header, rows: rows};
  }

  function readTable(file) {
    return file.arrayBuffer().then(function (buf) {
      var u8 = new Uint8Array(buf, 0, Math.min(6, buf.byteLength));
      if (u8[0] === 0x93) return parseNpy(buf);
      return parseCsv(new TextDecoder().decode(buf));
    });
  }

  // Splits the table(s) into x* (N x dims.x) and y (N x dims.y) using the header's names
  // when they name every column, else the column order.
  function pairsFrom(tabs, m) {
    var dx = m.dims.x, dy = m.dims.y;
    var nx = (m.names && m.names.x) || [], ny = (m.names && m.names.y) || [];
    function pick(tab, names, want, what) {
      if (tab.header && names.length === want && names.every(function (nm) { return tab.header.indexOf(nm) >= 0; })) {
        var ix = names.map(function (nm) { return tab.header.indexOf(nm); });
        return tab.rows.map(function (r) { return ix.map(function (i) { return r[i]; }); });
      }
      return null;
    }
    var x, y;
    if (tabs.length === 2) {
      x = pick(tabs[0], nx, dx) || tabs[0].rows;
      y = pick(tabs[1], ny, dy) || tabs[1].rows;
      if (x.length !== y.length) throw new Error('the x* file has ' + x.length + ' rows, the y file ' + y.length);
    } else {
      var t = tabs[0];
      x = pick(t, nx, dx);
      y = dy ? pick(t, ny, dy) : [];
      if (!x || (dy && !y)) {
        x = t.rows.map(function (r) { return r.slice(0, dx); });
        y = t.rows.map(function (r) { return r.slice(dx, dx + dy); });
        t.rows.forEach(function (r, i) {
          if (r.length !== dx + dy) throw new Error('row ' + (i + 1) + ' has ' + r.length + ' columns; want dims.x + dims.y = ' + (dx + dy) +
            ' (' + nx.concat(ny).join(', ') + ')');
        });
      }
    }
    x.forEach(function (r, i) { if (r.length !== dx) throw new Error('x* row ' + (i + 1) + ' has ' + r.length + ' values; want ' + dx); });
    if (dy) y.forEach(function (r, i) { if (r.length !== dy) throw new Error('y row ' + (i + 1) + ' has ' + r.length + ' values; want ' + dy); });
    if (!x.length) throw new Error('the file holds no rows');
    return {x: x, y: dy ? y : null};
  }

  function calBody(pairs) {
    var body = {x: pairs.x};
    if (pairs.y) body.y = pairs.y;
    var v = Number($('cal-num').value);
    if (!Number.isInteger(v) || v < 1) throw fieldError($('cal-num'), 'num_samples must be a whole number >= 1');
    body.num_samples = v;
    var s = $('cal-seed').value.trim();
    if (s !== '') {
      var sv = Number(s);
      if (!Number.isInteger(sv) || sv < 0) throw fieldError($('cal-seed'), 'seed must be a whole number >= 0');
      body.seed = sv;
    }
    var diags = Array.prototype.filter.call(document.querySelectorAll('input[name="diag"]'), function (c) { return c.checked; })
      .map(function (c) { return c.value; });
    if (!diags.length) throw new Error('choose at least one diagnostic');
    body.diagnostics = diags;
    var b = Number($('cal-bins').value);
    if (!Number.isInteger(b) || b < 1) throw fieldError($('cal-bins'), 'bins must be a whole number >= 1');
    body.bins = b;
    var k = Number($('cal-points').value);
    if (!Number.isInteger(k) || k < 1) throw fieldError($('cal-points'), 'coverage points must be a whole number >= 1');
    body.coverage_points = k;
    return body;
  }

  function progressText(j) {
    var p = j.progress || {};
    var parts = [j.state];
    if (p.total) parts.push((p.done || 0).toLocaleString('en-US') + ' of ' + p.total.toLocaleString('en-US') + ' ' + (p.unit || ''));
    if (p.rate) parts.push(Math.round(p.rate).toLocaleString('en-US') + '/s');
    if (p.eta_s !== null && p.eta_s !== undefined && j.state === 'running')
      parts.push(p.eta_s < 1 ? 'under 1 s left' : 'about ' + Math.ceil(p.eta_s) + ' s left');
    return parts.join(' · ');
  }

  // A panel of job progress: element ids of its <progress>, status line and cancel button.
  var PANELS = {
    sample: {bar: 'sample-progress', status: 'sample-status', cancel: 'sample-cancel', job: null},
    cal: {bar: 'cal-progress', status: 'cal-status', cancel: 'cal-cancel', job: null},
  };

  function showProgress(j, P) {
    var p = j.progress || {};
    var bar = $(P.bar);
    bar.hidden = false;
    if (p.total) { bar.max = p.total; bar.value = p.done || 0; }
    setStatus(P.status, 'Job ' + j.id + ': ' + progressText(j));
  }

  function sleep(ms) { return new Promise(function (res) { setTimeout(res, ms); }); }

  // Polls the job until it ends; resolves with its answer (the synchronous JSON).
  function pollJob(url, job, P) {
    var delay = 200;
    function step() {
      if (job.cancelled) return Promise.reject(cancelledError());
      return api(url).then(json).then(function (j) {
        if (job.cancelled) throw cancelledError();
        showProgress(j, P);
        if (j.state === 'done') {
          if (j.result) return j.result;
          return api(j.result_url || url + '/result').then(json);
        }
        if (j.state === 'failed') {
          var e = j.error || {};
          throw new Error('the job failed: ' + (e.error || 'no reason given') + (e.code ? ' (' + e.code + ')' : ''));
        }
        if (j.state === 'cancelled') throw cancelledError();
        delay = Math.min(1000, delay * 1.5);
        return sleep(delay).then(step);
      });
    }
    return step();
  }

  function cancelledError() {
    var e = new Error('the job was cancelled');
    e.cancelled = true;
    return e;
  }

  // POST path with body, as a job when asJob ("async": true, then GET /v1/jobs/{id} until
  // it ends, progress in panel P, its cancel button enabled): resolves with the answer.  A
  // server that refuses "async" (no jobs for this operation) is asked again without it.
  function runMaybeJob(path, body, asJob, P) {
    var job = {cancelled: false, url: null};
    P.job = job;
    var submit = function (async) {
      var b = async ? Object.assign({async: true}, body) : body;
      return api(path, {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(b)});
    };
    var done = function () { $(P.cancel).disabled = true; if (P.job === job) P.job = null; };
    if (!asJob) return submit(false).then(json).then(function (a) { done(); return a; }, function (e) { done(); throw e; });
    return submit(true).then(function (r) {
      if (r.status === 202) {
        return r.json().then(function (j) {
          job.url = r.headers.get('Location') || j.url;
          $(P.cancel).disabled = false;
          showProgress(j, P);
          return pollJob(job.url, job, P);
        });
      }
      if (r.status === 400) {
        return json(r).catch(function (e) {
          if (e.code === 'unknown_field' && /'async'/.test(e.message)) {
            setStatus(P.status, 'This server runs no jobs for this operation: waiting for the answer…');
            return submit(false).then(json);
          }
          throw e;
        });
      }
      return json(r);
    }).then(function (a) { done(); return a; }, function (e) { done(); throw e; });
  }

  function cancelJob(P) {
    var job = P.job;
    if (!job || !job.url) return;
    job.cancelled = true;
    $(P.cancel).disabled = true;
    api(job.url, {method: 'DELETE'}).then(json).then(function (j) {
      showProgress(j, P);
      setStatus(P.status, 'Job ' + j.id + ' cancelled.');
    }).catch(function (e) { if (e.status !== 401) setStatus(P.status, 'Cancel failed: ' + e.message, true); });
  }

  function runCalibration(ev) {
    ev.preventDefault();
    clearInvalid();
    var m = state.meta;
    var P = PANELS.cal;
    var f1 = $('cal-file').files[0], f2 = $('cal-file-y').files[0];
    if (!f1) { setStatus('cal-status', 'Choose a CSV or NPY file of (x*, y) pairs.', true); $('cal-file').focus(); return; }
    var files = f2 ? [f1, f2] : [f1];
    var path = '/v1/models/' + encodeURIComponent(m.name) + '/calibration';
    $('cal-run').disabled = true;
    $('cal-out').hidden = true;
    $('cal-progress').value = 0;
    setStatus('cal-status', 'Reading ' + files.map(function (f) { return f.name; }).join(' and ') + '…');
    Promise.all(files.map(readTable)).then(function (tabs) {
      var body = calBody(pairsFrom(tabs, m));
      setStatus('cal-status', 'Submitting ' + body.x.length + ' pairs × ' + body.num_samples + ' samples…');
      return runMaybeJob(path, body, true, P).then(function (res) {
        if (state.model !== m.name) return;
        showCalibration(res, m);
        setStatus('cal-status', 'Done: ' + res.n + ' pairs × ' + res.num_samples + ' samples (seed ' + res.seed + ').');
        $('cal-progress').value = $('cal-progress').max;
      });
    }).catch(function (e) {
      if (e.status === 401 || e.cancelled) return;
      if (e.status === 404 && e.code === 'not_found')
        setStatus('cal-status', 'This server has no calibration endpoint (' + e.message + ').', true);
      else setStatus('cal-status', e.message, true);
      if (e.input) e.input.focus();
    }).then(function () {
      $('cal-run').disabled = false;
    });
  }

  function showCalibration(res, m) {
    $('cal-out').hidden = false;
    var names = (m.names && m.names.x) || [];
    $('cal-info').textContent = res.model + ' v' + res.version + ': ' + res.n + ' pairs, ' + res.num_samples +
      ' posterior samples each, seed ' + res.seed + '.';
    var wl = $('cal-warnings');
    wl.textContent = '';
    (res.warnings || []).forEach(function (w) { wl.appendChild(el('li', null, w)); });
    wl.hidden = !(res.warnings && res.warnings.length);
    var t = $('cal-table'), head = t.tHead, body = t.tBodies[0];
    head.textContent = ''; body.textContent = '';
    var hr = el('tr');
    ['parameter', 'SBC KS statistic', 'SBC KS p-value'].forEach(function (h) { hr.appendChild(el('th', {scope: 'col'}, h)); });
    head.appendChild(hr);
    var d = m.dims.x;
    for (var k = 0; k < d; k++) {
      var tr = el('tr', {'data-dim': String(k)});
      tr.appendChild(el('th', {scope: 'row'}, names[k] || 'x' + k));
      var c1 = numCell(res.sbc ? res.sbc.ks_statistic[k] : null); c1.setAttribute('data-stat', 'ks_statistic'); tr.appendChild(c1);
      var c2 = numCell(res.sbc ? res.sbc.ks_pvalue[k] : null); c2.setAttribute('data-stat', 'ks_pvalue'); tr.appendChild(c2);
      body.appendChild(tr);
    }
    var w = $('cal-out').clientWidth || 800;
    $('fig-ranks').hidden = !res.sbc;
    if (res.sbc) drawRanks($('cal-ranks'), res.sbc.histogram, res.n, names, w);
    $('fig-coverage').hidden = !res.coverage;
    if (res.coverage) drawCoverage($('cal-coverage'), res.coverage, names);
    $('fig-tarp').hidden = !res.tarp;
    if (res.tarp) {
      drawTarp($('cal-tarp'), res.tarp);
      var cap = $('tarp-cap');
      cap.textContent = 'TARP: expected coverage probability against credibility level. ATC = ' + fmt(res.tarp.atc) +
        ', KS p-value = ' + fmt(res.tarp.ks_pvalue) + '.';
      cap.setAttribute('data-atc', String(res.tarp.atc));
    }
  }

  // ---- start --------------------------------------------------------------------------

  function init() {
    $('auth-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var t = $('auth-token').value.trim();
      try { sessionStorage.setItem(TOKEN_KEY, t); } catch (e) { /* private mode: kept nowhere */ }
      $('auth-token').value = '';
      $('auth').hidden = true;
      loadModels();
    });
    $('auth-forget').addEventListener('click', function () {
      try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* nothing kept */ }
      $('auth-token').value = '';
      updateCurl();
    });
    $('models-reload').addEventListener('click', loadModels);
    $('sample-form').addEventListener('submit', runSample);
    $('sample-form').addEventListener('input', updateCurl);
    $('y-paste-apply').addEventListener('click', pasteRow);
    $('y-test').addEventListener('change', useTestVector);
    $('y-paste').addEventListener('keydown', function (ev) { if (ev.key === 'Enter') { ev.preventDefault(); pasteRow(); } });
    $('y-paste').addEventListener('paste', function () { setTimeout(pasteRow, 0); });
    $('dl-csv').addEventListener('click', function () { download('csv'); });
    $('dl-npy').addEventListener('click', function () { download('npy'); });
    $('curl-copy').addEventListener('click', copyCurl);
    $('cal-form').addEventListener('submit', runCalibration);
    $('cal-cancel').addEventListener('click', function () { cancelJob(PANELS.cal); });
    $('sample-cancel').addEventListener('click', function () { cancelJob(PANELS.sample); });
    loadModels();
  }

  window.innserveUI = {drawCorner: drawCorner, drawRanks: drawRanks, drawCoverage: drawCoverage,
                       drawTarp: drawTarp, parseCsv: parseCsv, parseNpy: parseNpy,
                       pairsFrom: pairsFrom, fmt: fmt};
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
