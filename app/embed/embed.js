/* b24-form-gateway embed.js: at submit, adds to forms marked data-b24-gateway the visitor's
   Bitrix24 Sales Intelligence trace, the visit's UTM tags and a submission_id (the idempotency
   key); data-b24-ajax forms are sent with fetch. The contract: docs/design.md, "embed.js".
   Readable source of embed.min.js, which the gateway serves: after editing, run
   `npm ci --prefix tools/js && python -m app.embed.minify` (terser). */
((w, d) => {
  const KEY = 'b24gw';
  const KEEP_MS = 28 * 864e5;
  const RETRIES = 3;
  const NAMES = ['utm_source', 'utm_medium', 'utm_campaign', 'utm_content', 'utm_term',
    'gclid', 'yclid', 'fbclid'];
  // A field named "submit" or "reset" hides the form's own method: call the prototype's.
  const FORM = HTMLFormElement.prototype;
  const each = (list, fn) => [].forEach.call(list, fn);
  const visit = {};
  let tagged = 0;
  let kept, stored;

  // Attribution is kept in localStorage for 28 days, as the Bitrix24 tracker keeps its tags.
  // Storage may throw (privacy modes, blocked storage): then only this page's tags are sent.
  try {
    kept = JSON.parse(localStorage.getItem(KEY));
  } catch (e) {}
  stored = kept && kept.t > Date.now() - KEEP_MS && kept.v;
  new URLSearchParams(location.search).forEach((value, name) => {
    if (value && NAMES.includes(name)) {
      visit[name] = value;
      tagged = 1;
    }
  });
  // Last touch: a visit tagged with another utm_source (or none: a gclid alone) starts a new
  // set; an untagged page (the site's next page, a direct return) keeps the stored one.
  if (!stored || tagged && (visit.utm_source || '') != (stored.utm_source || '')) {
    if (d.referrer && d.referrer.split('/')[2] != location.host) visit.referrer = d.referrer;
    visit.landing_page = location.href;
    stored = visit;
    try {
      localStorage.setItem(KEY, JSON.stringify({ t: Date.now(), v: stored }));
    } catch (e) {}
  }

  // Sets a hidden field, adding it when missing; a visible field of that name is the
  // visitor's own answer and wins. Returns the field.
  const put = (form, name, value) => {
    let field = form.elements[name];
    if (!field) {
      field = form.appendChild(d.createElement('input'));
      field.type = 'hidden';
      field.name = name;
    }
    if (field.type == 'hidden') field.value = value;
    return field;
  };

  const uid = () => [].map.call(crypto.getRandomValues(new Uint8Array(16)),
    (b) => (b + 256).toString(16).slice(1)).join('');

  // Each render of a form gets a submission_id; `fresh` starts a new one (and a new trace)
  // after a success, or when the back/forward cache shows the page again.
  const prepare = (form, fresh) => {
    const id = form.elements.submission_id;
    const trace = form.elements.trace;
    if (fresh || !id || !id.value) put(form, 'submission_id', uid());
    if (fresh && trace && trace.b24) trace.value = '';
    for (const name in stored) put(form, name, stored[name]);
  };

  const toggle = (form, selector, on) => {
    const el = form.querySelector(selector);
    if (el) {
      el.hidden = !on;
      el.style.display = on ? '' : 'none';
    }
  };

  // state: sending, error (still busy while retrying), sent, or '' (ready again).
  const status = (form, state, busy) => {
    form.b24busy = busy;
    form.setAttribute('data-b24-state', state);
    each(form.querySelectorAll('button:not([type]),[type=submit],[type=image]'),
      (button) => button.disabled = busy);
    toggle(form, '[data-b24-success]', state == 'sent');
    toggle(form, '[data-b24-error]', state == 'error');
  };

  // The tracker loads asynchronously, late or never (ad blockers, consent banners): poll for
  // it every 200 ms, up to data-b24-wait-ms (3 s). getTrace() is destructive (it clears the
  // visit history it returns), so it is called once per submission, here and only here.
  const withTrace = (form, go) => {
    const wait = form.getAttribute('data-b24-wait-ms');
    const end = Date.now() + (wait == null || isNaN(wait) ? 3000 : +wait);
    const field = form.elements.trace;
    if (field && field.value) return go();
    const poll = () => {
      let getTrace, trace;
      try {
        getTrace = w.b24Tracker.guest.getTrace;
      } catch (e) {}
      if (typeof getTrace != 'function' && Date.now() < end) return setTimeout(poll, 200);
      try {
        trace = w.b24Tracker.guest.getTrace();
      } catch (e) {}
      if (typeof trace == 'string' && trace) put(form, 'trace', trace).b24 = 1;
      go();
    };
    poll();
  };

  const post = (form) => {
    form.acceptCharset = 'UTF-8';
    FORM.submit.call(form);
  };

  // The body is built once, so every attempt carries the same fields and submission_id: an
  // attempt whose answer was lost is answered again by the gateway, not stored twice.
  const send = (form, body, attempt) => fetch(form.getAttribute('action') || '', {
    method: 'POST',
    body: body,
    headers: { Accept: 'application/json' }
  }).catch(() => 0).then((answer) => {
    if (answer && answer.status < 500 && answer.status != 429) {
      status(form, answer.ok ? 'sent' : 'error', 0);
      if (answer.ok) {
        FORM.reset.call(form);
        prepare(form, 1);
        form.b24t = performance.now();
      }
    } else {
      // No answer, or a passing failure: show the error, keep trying (after 1, 2, 4 s), then
      // a normal post, which gets past what may block fetch alone (CSP, CORS, an extension).
      status(form, 'error', attempt < RETRIES || !answer);
      if (attempt < RETRIES) setTimeout(() => send(form, body, attempt + 1), 1000 << attempt);
      else if (!answer) post(form);
    }
  });

  d.addEventListener('submit', (event) => {
    const form = event.target;
    // A page's own handler that cancelled the submit (its validation failed) has the last word.
    if (event.defaultPrevented || !form.hasAttribute('data-b24-gateway')) return;
    event.preventDefault();
    if (form.b24busy) return;
    status(form, 'sending', 1);
    prepare(form);
    // Fill time for the gateway's spam check (app/intake/spam.py), on the page's monotonic
    // clock: from render, or from page start for a form added later (never too short).
    put(form, '_fill_ms', Math.round(performance.now() - (form.b24t || 0)));
    withTrace(form, () => {
      if (form.hasAttribute('data-b24-ajax')) send(form, new FormData(form), 0);
      else post(form);
    });
  });

  const forms = () => d.querySelectorAll('form[data-b24-gateway]');
  // Back/forward cache: the page comes back as it was left, mid-submit: a new render.
  w.addEventListener('pageshow', (event) => {
    if (event.persisted) {
      each(forms(), (form) => {
        status(form, '', 0);
        prepare(form, 1);
      });
    }
  });
  const init = () => each(forms(), (form) => {
    form.b24t = performance.now();
    prepare(form);
  });
  if (d.readyState == 'loading') d.addEventListener('DOMContentLoaded', init);
  else init();
})(window, document);
