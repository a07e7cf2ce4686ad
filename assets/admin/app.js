// labelport admin page: projects and their export storages, over the public API.
// Everything is rendered with DOM calls and textContent: no API value is ever parsed as HTML.

const TOKEN_KEY = 'labelport.token';
const ACTIVE = new Set(['queued', 'in_progress']);
const STATUS_TEXT = {
  initialized: 'Initialized', queued: 'Queued', in_progress: 'In progress', failed: 'Failed',
  completed: 'Completed', completed_with_errors: 'Completed with errors',
};

const app = document.getElementById('app');
const notice = document.getElementById('notice');
const who = document.getElementById('who');
const signout = document.getElementById('signout');

// ---- auth and API ---------------------------------------------------------------------

let auth = null; // {kind: 'token', token} | {kind: 'session', csrf}
let types = null; // [{name, title}]
let pollTimer = null;

async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (auth && auth.kind === 'token') headers.Authorization = `Token ${auth.token}`;
  if (auth && auth.kind === 'session' && method !== 'GET') headers['X-CSRFToken'] = auth.csrf;
  const response = await fetch(path, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  if (response.status !== 204) {
    try { data = await response.json(); } catch { data = null; }
  }
  if (response.status === 401 && auth && location.hash !== '#/login') {
    forget();
    go('#/login');
  }
  return { ok: response.ok, status: response.status, data };
}

function forget() {
  auth = null;
  sessionStorage.removeItem(TOKEN_KEY);
  who.textContent = '';
  signout.hidden = true;
}

async function restore() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) {
    auth = { kind: 'token', token };
    const me = await api('GET', '/api/current-user/whoami');
    if (me.ok) return signedIn(me.data.email);
    forget();
  }
  const session = await fetch('/api/admin/session', { credentials: 'same-origin' });
  if (session.ok) {
    const data = await session.json();
    auth = { kind: 'session', csrf: data.csrf_token };
    return signedIn(data.user.email);
  }
  return false;
}

function signedIn(email) {
  who.textContent = email;
  signout.hidden = false;
  return true;
}

signout.addEventListener('click', async () => {
  if (auth && auth.kind === 'session') await api('POST', '/api/admin/logout');
  forget();
  go('#/login');
});

// ---- DOM helpers ----------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function say(message, kind = 'info') {
  notice.textContent = message;
  notice.className = `notice ${kind}`;
}

function errorText(data, status) {
  if (data && typeof data.detail === 'string' && !data.validation_errors) return data.detail;
  if (data && data.validation_errors) {
    return Object.entries(data.validation_errors).map(([k, v]) => `${k}: ${[].concat(v).join(' ')}`).join('; ');
  }
  return `Request failed (${status})`;
}

function show(...nodes) {
  app.replaceChildren(...nodes.flat().filter(Boolean));
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

// Sign-in redirects replace the history entry, so Back never lands on the sign-in form.
function replace(hash) {
  if (location.hash === hash) route();
  else location.replace(hash);
}

function when(iso) {
  if (!iso) return 'never';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

// ---- routing --------------------------------------------------------------------------

async function route() {
  clearTimeout(pollTimer);
  pollTimer = null;
  const hash = location.hash || '#/';
  if (!auth && hash !== '#/login') {
    if (!(await restore())) return replace('#/login');
  }
  let m;
  if (hash === '#/login') return loginPage();
  if ((m = hash.match(/^#\/projects\/(\d+)\/new\/([a-z0-9]+)$/))) return formPage({ project: Number(m[1]), type: m[2] });
  if ((m = hash.match(/^#\/storages\/([a-z0-9]+)\/(\d+)\/edit$/))) return formPage({ type: m[1], id: Number(m[2]) });
  return overviewPage();
}

function focusMain(selector) {
  const target = selector ? app.querySelector(selector) : null;
  (target || app).focus();
}

// ---- sign in --------------------------------------------------------------------------

function loginPage() {
  forget();
  document.title = 'Sign in · labelport';
  const error = h('p', { class: 'error', id: 'login-error', role: 'alert' });
  const tokenError = h('p', { class: 'error', id: 'token-error', role: 'alert' });
  const passwordForm = h('form', { class: 'card', 'aria-labelledby': 'pw-title' },
    h('h2', { id: 'pw-title', text: 'Email and password' }),
    error,
    field('login-email', 'Email', h('input', { id: 'login-email', name: 'email', type: 'email', autocomplete: 'username', required: true })),
    field('login-password', 'Password', h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true })),
    h('button', { type: 'submit', text: 'Sign in' }));
  passwordForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    const body = { email: passwordForm.email.value, password: passwordForm.password.value };
    const result = await api('POST', '/api/admin/login', body);
    if (!result.ok) {
      error.textContent = errorText(result.data, result.status);
      return;
    }
    auth = { kind: 'session', csrf: result.data.csrf_token };
    signedIn(result.data.user.email);
    replace('#/');
  });
  const tokenForm = h('form', { class: 'card', 'aria-labelledby': 'token-title' },
    h('h2', { id: 'token-title', text: 'API token' }),
    tokenError,
    field('login-token', 'Token', h('input', { id: 'login-token', name: 'token', type: 'password', autocomplete: 'off', required: true })),
    h('p', { class: 'hint', text: 'A legacy token (Account & Settings); kept in this tab only.' }),
    h('button', { type: 'submit', text: 'Use token' }));
  tokenForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    tokenError.textContent = '';
    auth = { kind: 'token', token: tokenForm.token.value.trim() };
    const me = await api('GET', '/api/current-user/whoami');
    if (!me.ok) {
      forget();
      tokenError.textContent = errorText(me.data, me.status);
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, auth.token);
    signedIn(me.data.email);
    replace('#/');
  });
  show(h('h1', { text: 'Sign in' }), h('div', { class: 'signin' }, passwordForm, tokenForm));
  document.getElementById('login-email').focus();
}

function field(id, label, input, extra) {
  return h('div', { class: 'field' }, h('label', { for: id, text: label }), input, extra);
}

// ---- overview -------------------------------------------------------------------------

async function loadTypes() {
  if (!types) {
    const r = await api('GET', '/api/storages/export/types');
    types = r.ok ? r.data : [];
  }
  return types;
}

function typeTitle(name) {
  const t = (types || []).find((x) => x.name === name);
  return t ? t.title : name;
}

function target(s) {
  switch (s.type) {
    case 'localfiles': return s.path || '';
    case 's3': case 'gcs': return `${s.bucket || ''}${s.prefix ? `/${s.prefix}` : ''}`;
    case 'azure': return `${s.container || ''}${s.prefix ? `/${s.prefix}` : ''}`;
    case 'redis': return `${s.host || ''}${s.port ? `:${s.port}` : ''}${s.db !== undefined && s.db !== null ? ` db ${s.db}` : ''}`;
    default: return '';
  }
}

async function overviewPage() {
  document.title = 'Export storages · labelport';
  await loadTypes();
  const projects = [];
  for (let page = 1; page <= 50; page += 1) {
    const r = await api('GET', `/api/projects/?page_size=100&page=${page}`);
    if (!r.ok) { show(h('p', { class: 'error', role: 'alert', text: errorText(r.data, r.status) })); return; }
    projects.push(...(r.data.results || []));
    if (!r.data.next) break;
  }
  const sections = [];
  for (const project of projects) sections.push(await projectSection(project));
  show(h('h1', { text: 'Export storages' }),
    projects.length ? sections : h('p', { text: 'No projects yet. Create one through the API.' }));
  focusMain();
  schedulePoll();
}

async function projectSection(project) {
  const r = await api('GET', `/api/storages/export?project=${project.id}`);
  const storages = r.ok ? r.data : [];
  const headingId = `project-${project.id}`;
  const select = h('select', { id: `new-type-${project.id}`, name: 'type' },
    types.map((t) => h('option', { value: t.name, text: t.title })));
  const add = h('form', { class: 'add' },
    h('label', { for: select.id, text: 'New storage' }), select,
    h('button', { type: 'submit', class: 'secondary', text: 'Add storage' }));
  add.addEventListener('submit', (event) => {
    event.preventDefault();
    go(`#/projects/${project.id}/new/${select.value}`);
  });
  const list = h('ul', { class: 'storages', 'aria-labelledby': headingId });
  for (const s of storages) list.append(await storageCard(s));
  return h('section', { class: 'project', 'aria-labelledby': headingId },
    h('div', { class: 'project-head' },
      h('h2', { id: headingId }, project.title || `Project ${project.id}`, h('span', { class: 'muted', text: ` #${project.id}` })),
      add),
    storages.length ? list : h('p', { class: 'muted', text: 'No export storages.' }));
}

async function storageCard(s) {
  const lag = await api('GET', `/api/storages/export/${s.type}/${s.id}/lag`);
  const key = `${s.type}-${s.id}`;
  const active = ACTIVE.has(s.status);
  const meta = s.meta || {};
  const total = Number(meta.total_annotations);
  const done = Number(s.last_sync_count) || 0;
  let progress = null;
  if (active) {
    const label = Number.isFinite(total) && total > 0 ? `${done} of ${total} annotations` : 'waiting';
    progress = h('div', { class: 'progress-row' },
      h('progress', Number.isFinite(total) && total > 0
        ? { max: total, value: Math.min(done, total), 'aria-label': `Sync progress: ${label}` }
        : { 'aria-label': 'Sync queued' }),
      h('span', { class: 'muted', text: label }));
  }
  const facts = h('dl', { class: 'facts' },
    h('dt', { text: 'Target' }), h('dd', { class: 'target', text: target(s) || '—' }),
    h('dt', { text: 'Last sync' }), h('dd', { text: when(s.last_sync) }),
    h('dt', { text: 'Synced' }), h('dd', { text: `${s.last_sync_count ?? 0} annotations` }),
    h('dt', { text: 'Pending changes' }), h('dd', { class: 'lag', text: lag.ok ? String(lag.data.pending_changes) : '?' }));
  const traceback = s.traceback && (s.status === 'failed' || s.status === 'completed_with_errors')
    ? h('details', { class: 'traceback', open: true }, h('summary', { text: 'Traceback' }), h('pre', { text: s.traceback }))
    : null;
  const actions = h('div', { class: 'actions' },
    h('button', { type: 'button', 'data-action': 'sync', disabled: active, onclick: () => sync(s, false), text: 'Sync' }),
    h('button', { type: 'button', class: 'secondary', 'data-action': 'full', disabled: active, onclick: () => sync(s, true), text: 'Full sync' }),
    h('a', { class: 'button secondary', href: `#/storages/${s.type}/${s.id}/edit`, 'data-action': 'edit', text: 'Edit' }),
    h('button', { type: 'button', class: 'danger', 'data-action': 'delete', onclick: () => remove(s), text: 'Delete' }));
  return h('li', { class: `storage status-${s.status}`, id: `storage-${key}`, 'data-type': s.type, 'data-id': s.id, 'data-status': s.status },
    h('div', { class: 'storage-head' },
      h('h3', {}, s.title || `${typeTitle(s.type)} #${s.id}`),
      h('span', { class: 'type', text: typeTitle(s.type) }),
      h('span', { class: `status badge-${s.status}`, text: STATUS_TEXT[s.status] || s.status })),
    progress, facts, traceback, actions);
}

async function refreshCard(s) {
  const old = document.getElementById(`storage-${s.type}-${s.id}`);
  if (!old) return;
  const focused = old.contains(document.activeElement) ? document.activeElement.getAttribute('data-action') : null;
  const card = await storageCard(s);
  old.replaceWith(card);
  if (focused) {
    const again = card.querySelector(`[data-action="${focused}"]`);
    if (again && !again.disabled) again.focus();
    else card.querySelector('[data-action="edit"]').focus();
  }
}

function schedulePoll() {
  clearTimeout(pollTimer);
  const cards = [...app.querySelectorAll('li.storage')].filter((li) => ACTIVE.has(li.dataset.status));
  if (!cards.length) return;
  const hash = location.hash;
  pollTimer = setTimeout(async () => {
    for (const li of cards) {
      const r = await api('GET', `/api/storages/export/${li.dataset.type}/${li.dataset.id}`);
      if (location.hash !== hash) return;
      if (r.ok) await refreshCard(r.data);
      if (r.ok && !ACTIVE.has(r.data.status)) {
        const bad = r.data.status === 'failed' || r.data.status === 'completed_with_errors';
        say(`${r.data.title || 'Storage'}: ${STATUS_TEXT[r.data.status] || r.data.status}`, bad ? 'error' : 'info');
      }
    }
    schedulePoll();
  }, 700);
}

async function sync(s, full) {
  const r = await api('POST', `/api/storages/export/${s.type}/${s.id}/sync${full ? '?full=true' : ''}`);
  if (!r.ok) { say(errorText(r.data, r.status), 'error'); return; }
  say(`${s.title || 'Storage'}: ${full ? 'full sync' : 'sync'} queued`);
  await refreshCard(r.data);
  schedulePoll();
}

// ---- delete with confirmation ----------------------------------------------------------

function remove(s) {
  const opener = document.activeElement;
  const dialog = h('dialog', { class: 'confirm', 'aria-labelledby': 'confirm-title' },
    h('h2', { id: 'confirm-title', text: 'Delete this storage?' }),
    h('p', {}, `“${s.title || `${typeTitle(s.type)} #${s.id}`}” will be removed. Files already exported stay where they are.`),
    h('form', { method: 'dialog', class: 'actions' },
      h('button', { type: 'submit', value: 'cancel', class: 'secondary', text: 'Cancel', autofocus: true }),
      h('button', { type: 'submit', value: 'delete', class: 'danger', text: 'Delete storage' })));
  document.body.append(dialog);
  dialog.addEventListener('close', async () => {
    dialog.remove();
    if (dialog.returnValue !== 'delete') { if (opener) opener.focus(); return; }
    const r = await api('DELETE', `/api/storages/export/${s.type}/${s.id}`);
    if (!r.ok) { say(errorText(r.data, r.status), 'error'); return; }
    say(`${s.title || 'Storage'} deleted`);
    route();
  });
  dialog.showModal();
}

// ---- create and edit ------------------------------------------------------------------

function formFields(layout) {
  const out = [];
  for (const row of layout || []) {
    for (const f of row.fields || []) out.push(f);
    for (const col of row.columns || []) for (const f of col.fields || []) out.push(f);
  }
  return out;
}

async function formPage({ project, type, id }) {
  await loadTypes();
  if (!types.some((t) => t.name === type)) { show(h('p', { class: 'error', text: 'Unknown storage type.' })); return; }
  const layout = await api('GET', `/api/storages/export/${type}/form`);
  if (!layout.ok) { show(h('p', { class: 'error', role: 'alert', text: errorText(layout.data, layout.status) })); return; }
  let current = null;
  if (id !== undefined) {
    const r = await api('GET', `/api/storages/export/${type}/${id}`);
    if (!r.ok) { show(h('p', { class: 'error', role: 'alert', text: errorText(r.data, r.status) })); return; }
    current = r.data;
    project = current.project;
  }
  const editing = current !== null;
  const fields = formFields(layout.data);
  document.title = `${editing ? 'Edit' : 'New'} ${typeTitle(type)} storage · labelport`;
  const top = h('div', { class: 'error', id: 'form-errors', role: 'alert' });
  const form = h('form', { class: 'card storage-form', novalidate: true });
  const errors = {};
  for (const rowFields of (layout.data || []).map((row) => [...(row.fields || []), ...(row.columns || []).flatMap((c) => c.fields || [])])) {
    const row = h('div', { class: 'row' });
    for (const f of rowFields) {
      const inputId = `f-${f.name}`;
      const err = h('p', { class: 'error field-error', id: `${inputId}-error` });
      errors[f.name] = err;
      const value = current ? current[f.name] : undefined;
      let input;
      if (f.type === 'toggle') {
        input = h('input', { id: inputId, name: f.name, type: 'checkbox', 'aria-describedby': err.id });
        input.checked = value === undefined ? Boolean(f.value) : Boolean(value);
        row.append(h('div', { class: 'field toggle' },
          h('label', { for: inputId }, input, ` ${f.label || f.name}`),
          f.description ? h('p', { class: 'hint', text: f.description }) : null, err));
        continue;
      }
      const secret = f.type === 'password';
      input = h('input', {
        id: inputId, name: f.name, type: secret ? 'password' : 'text',
        placeholder: secret && editing ? 'unchanged (leave empty to keep)' : f.placeholder,
        autocomplete: secret ? 'new-password' : 'off', required: f.required && !(secret && editing),
        'aria-describedby': err.id,
      });
      // Secrets are never shown back: password inputs start empty.
      if (!secret && value !== undefined && value !== null) input.value = String(value);
      row.append(field(inputId, `${f.label || f.name}${f.required ? ' *' : ''}`, input, err));
    }
    form.append(row);
  }
  const cancel = h('a', { class: 'button secondary', href: '#/', text: 'Cancel' });
  const validateButton = h('button', { type: 'button', class: 'secondary', text: 'Check connection' });
  form.append(h('div', { class: 'actions' }, h('button', { type: 'submit', text: editing ? 'Save' : 'Create storage' }), validateButton, cancel));

  // Only what was entered: on create, empty optional fields keep the API's defaults; on
  // edit, only changed fields are sent, and an empty secret keeps the stored one.
  function body() {
    const out = editing ? {} : { project };
    for (const f of fields) {
      const input = form.elements[f.name];
      if (!input) continue;
      const before = current ? current[f.name] : undefined;
      if (f.type === 'toggle') {
        if (!editing || Boolean(before) !== input.checked) out[f.name] = input.checked;
      } else if (f.type === 'password') {
        if (input.value !== '') out[f.name] = input.value;
      } else if (editing ? String(before ?? '') !== input.value : input.value !== '' || f.required) {
        out[f.name] = input.value;
      }
    }
    return out;
  }

  function showErrors(result) {
    top.replaceChildren();
    for (const err of Object.values(errors)) err.textContent = '';
    for (const input of form.querySelectorAll('[aria-invalid]')) input.removeAttribute('aria-invalid');
    const data = result.data || {};
    const v = data.validation_errors;
    let first = null;
    if (v && typeof v === 'object') {
      for (const [name, messages] of Object.entries(v)) {
        const text = [].concat(messages).join(' ');
        if (errors[name]) {
          errors[name].textContent = text;
          const input = form.elements[name];
          input.setAttribute('aria-invalid', 'true');
          first = first || input;
        } else {
          top.append(h('p', { text: name === 'non_field_errors' ? text : `${name}: ${text}` }));
        }
      }
    } else {
      top.append(h('p', { text: errorText(data, result.status) }));
    }
    (first || top).focus();
  }

  async function check() {
    const payload = body();
    if (editing) { payload.id = current.id; payload.project = project; }
    const r = await api('POST', `/api/storages/export/${type}/validate`, payload);
    if (!r.ok) { showErrors(r); return false; }
    top.replaceChildren();
    for (const err of Object.values(errors)) err.textContent = '';
    return true;
  }

  validateButton.addEventListener('click', async () => {
    if (await check()) say('The settings are valid.');
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!(await check())) return;
    const r = editing
      ? await api('PATCH', `/api/storages/export/${type}/${current.id}`, body())
      : await api('POST', `/api/storages/export/${type}`, body());
    if (!r.ok) { showErrors(r); return; }
    say(`${r.data.title || 'Storage'} ${editing ? 'saved' : 'created'}`);
    go('#/');
  });
  top.tabIndex = -1;
  show(h('p', {}, h('a', { href: '#/', text: '← All storages' })),
    h('h1', { text: `${editing ? 'Edit' : 'New'} ${typeTitle(type)} storage` }),
    h('p', { class: 'muted', text: `Project #${project}` }), top, form);
  const firstInput = form.querySelector('input');
  if (firstInput) firstInput.focus();
}

window.addEventListener('hashchange', route);
route();
