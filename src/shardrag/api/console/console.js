// shardrag web console: sign in with an API key, upload, list, search and ask.
// API data is untrusted (documents are user content): it only ever reaches the page through
// textContent and DOM nodes, never through innerHTML.
'use strict';

(() => {
  const KEY_STORAGE = 'shardrag.apiKey';
  const POLL_MS = 1500;
  const STATES = new Set(['live', 'pending', 'failed', 'deleted', 'superseded']);
  const MARKER = /\[(\d+(?:\s*,\s*\d+)*)\]/g; // [1] or [1, 2], as the answer cites sources

  const $ = (selector) => document.querySelector(selector);
  const session = { key: null, whoami: null, pollTimer: null, uploads: Promise.resolve() };

  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details || {};
    }
  }

  // Create an element; strings among children become text nodes (never parsed as HTML).
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === 'className') node.className = value;
      else if (name === 'text') node.textContent = String(value);
      else if (name === 'dataset') Object.assign(node.dataset, value);
      else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? '' : String(value));
    }
    node.append(...children.filter((child) => child !== null && child !== undefined));
    return node;
  }

  // ---- API ------------------------------------------------------------------------------

  function errorFrom(status, text) {
    let body = null;
    try {
      body = JSON.parse(text);
    } catch (_) {
      // not JSON: fall through to a generic error
    }
    const error = body && body.error;
    if (error && typeof error === 'object') {
      return new ApiError(status, String(error.code || `http_${status}`),
        String(error.message || `HTTP ${status}`), error.details);
    }
    const message = body && typeof body.detail === 'string' ? body.detail : `HTTP ${status}`;
    return new ApiError(status, `http_${status}`, message);
  }

  async function api(method, path, body, key = session.key) {
    const init = { method, headers: { Accept: 'application/json', Authorization: `Bearer ${key}` } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (_) {
      throw new ApiError(0, 'network_error', 'The server could not be reached.');
    }
    const text = await response.text();
    if (!response.ok) throw errorFrom(response.status, text);
    return text ? JSON.parse(text) : null;
  }

  const segments = (id) => String(id).split('/').map(encodeURIComponent).join('/');
  const tenantPath = (suffix) => `/v1/tenants/${encodeURIComponent(session.whoami.tenant)}${suffix}`;
  const documentPath = (docId) => tenantPath(`/documents/${segments(docId)}`);
  const canWrite = () => Boolean(session.whoami && session.whoami.tenant)
    && session.whoami.role !== 'reader';

  // ---- alerts ---------------------------------------------------------------------------

  function showError(error) {
    const code = error.code || 'error';
    $('#alert-text').textContent = `${code}: ${error.message || 'Something went wrong.'}`;
    $('#alert').hidden = false;
  }

  // A key revoked or expired mid-session signs the user out; every error is shown.
  function fail(error) {
    if (error.status === 401 && session.key) signOut();
    showError(error);
  }

  function clearError() {
    $('#alert').hidden = true;
    $('#alert-text').textContent = '';
  }

  // ---- sign in / out --------------------------------------------------------------------

  async function signIn(key) {
    clearError();
    const button = $('#signin-button');
    button.disabled = true;
    let whoami;
    try {
      whoami = await api('GET', '/v1/whoami', undefined, key);
    } catch (error) {
      sessionStorage.removeItem(KEY_STORAGE);
      showError(error);
      return;
    } finally {
      button.disabled = false;
    }
    session.key = key;
    session.whoami = whoami;
    sessionStorage.setItem(KEY_STORAGE, key);
    $('#api-key').value = '';
    render();
    if (whoami.tenant !== null) loadDocuments();
    if (whoami.role === 'root') loadTenants();
    else if (whoami.role === 'admin') loadAdmin();
  }

  function signOut() {
    sessionStorage.removeItem(KEY_STORAGE);
    clearTimeout(session.pollTimer);
    Object.assign(session, { key: null, whoami: null, pollTimer: null });
    for (const id of ['#documents-body', '#upload-list', '#search-results', '#answer-text', '#sources',
      '#keys-body', '#audit-body', '#admin-tenant']) {
      $(id).replaceChildren();
    }
    $('#answer').hidden = true;
    $('#search-summary').hidden = true;
    $('#new-key-box').hidden = true;
    $('#new-key').textContent = '';
    clearError();
    render();
    $('#api-key').focus();
  }

  function render() {
    const who = session.whoami;
    const tenantKey = Boolean(who && who.tenant);
    $('#signin-section').hidden = Boolean(who);
    $('#session').hidden = !who;
    $('#root-notice').hidden = !who || tenantKey;
    $('#workspace').hidden = !tenantKey;
    const admin = Boolean(who) && (who.role === 'root' || who.role === 'admin');
    $('#admin-section').hidden = !admin;
    $('#tenants-admin').hidden = !who || who.role !== 'root';
    $('#upload-section').hidden = !canWrite();
    document.body.classList.toggle('read-only', !canWrite());
    if (who) {
      $('#session-tenant').textContent = who.tenant === null ? '(none: root)' : who.tenant;
      $('#session-role').textContent = who.role;
      $('#session-key-id').textContent = who.key_id;
    }
  }

  // ---- documents ------------------------------------------------------------------------

  async function loadDocuments() {
    clearTimeout(session.pollTimer);
    if (!session.whoami || !session.whoami.tenant) return;
    const key = session.key;
    let page;
    try {
      page = await api('GET', tenantPath('/documents?limit=100'));
    } catch (error) {
      fail(error);
      return;
    }
    if (session.key !== key) return; // signed out meanwhile
    renderDocuments(page);
    const busy = page.documents.some((d) => d.state === 'pending' || d.latest_state === 'pending');
    clearTimeout(session.pollTimer);
    if (busy) session.pollTimer = setTimeout(loadDocuments, POLL_MS);
  }

  function badge(state) {
    const known = STATES.has(state) ? state : 'unknown';
    return el('span', { className: `badge badge-${known}`, text: state });
  }

  function documentRow(doc) {
    const name = el('td', { className: 'doc-id' }, el('code', { text: doc.doc_id }));
    if (doc.filename && doc.filename !== doc.doc_id) {
      name.append(el('div', { className: 'muted small', text: doc.filename }));
    }
    if (doc.acl && doc.acl.length) {
      name.append(el('div', { className: 'muted small doc-acl', text: `groups: ${doc.acl.join(', ')}` }));
    }
    const stateCell = el('td', {}, badge(doc.state));
    if (doc.latest_version !== doc.version && doc.latest_state !== doc.state) {
      stateCell.append(el('div', {
        className: 'muted small', text: `v${doc.latest_version} ${doc.latest_state}`,
      }));
    }
    const error = doc.error ? `${doc.error.code}: ${doc.error.message}` : '';
    return el('tr', { dataset: { docId: doc.doc_id, state: doc.state } },
      name,
      stateCell,
      el('td', { className: 'num', text: doc.version }),
      el('td', { className: 'num', text: doc.chunk_count }),
      el('td', { className: 'doc-error', text: error }),
      canWrite() ? el('td', { className: 'actions' }, deleteButton(doc.doc_id)) : null);
  }

  function renderDocuments(page) {
    const rows = page.documents.map(documentRow);
    if (rows.length === 0) {
      rows.push(el('tr', { className: 'empty' },
        el('td', { colspan: 6, className: 'muted', text: 'No documents yet.' })));
    }
    $('#documents-body').replaceChildren(...rows);
    $('#documents-more').hidden = !page.next_after;
    followUploads(page.documents);
  }

  // An accepted upload is processed in the background: show how its version ended up.
  function followUploads(documents) {
    const byId = new Map(documents.map((doc) => [doc.doc_id, doc]));
    for (const item of document.querySelectorAll('#upload-list li[data-version]')) {
      const doc = byId.get(item.dataset.fileName);
      if (!doc || String(doc.latest_version) !== item.dataset.version) continue;
      const status = item.querySelector('.upload-status');
      const failed = doc.latest_state === 'failed' && doc.error;
      status.textContent = failed ? `failed · ${doc.error.code}: ${doc.error.message}`
        : `${doc.latest_state} · v${doc.latest_version}`;
      status.classList.toggle('error', Boolean(failed));
    }
  }

  // Delete asks for a second click instead of a modal dialog.
  function deleteButton(docId) {
    const button = el('button', {
      type: 'button', className: 'button danger small delete-button', text: 'Delete',
      'aria-label': `Delete ${docId}`,
    });
    let armed = null;
    button.addEventListener('click', async () => {
      if (!armed) {
        button.textContent = 'Confirm delete';
        button.classList.add('armed');
        armed = setTimeout(() => {
          armed = null;
          button.textContent = 'Delete';
          button.classList.remove('armed');
        }, 5000);
        return;
      }
      clearTimeout(armed);
      button.disabled = true;
      button.textContent = 'Deleting…';
      try {
        await api('DELETE', documentPath(docId));
      } catch (error) {
        fail(error);
      }
      loadDocuments();
    });
    return button;
  }

  // ---- uploads --------------------------------------------------------------------------

  // The access groups typed now apply to the files queued now (a JSON array, or none).
  function uploadGroups() {
    const names = $('#upload-acl').value.split(',').map((name) => name.trim()).filter(Boolean);
    return names.length ? JSON.stringify(names) : null;
  }

  function queueUploads(files) {
    if (!canWrite()) return;
    const acl = uploadGroups();
    for (const file of files) {
      const row = uploadRow(file);
      session.uploads = session.uploads.then(() => upload(file, row, acl));
    }
  }

  function uploadRow(file) {
    const bar = el('progress', { max: 100, value: 0, 'aria-label': `Upload of ${file.name}` });
    const status = el('span', { className: 'upload-status', text: 'Queued' });
    const item = el('li', { className: 'upload', dataset: { fileName: file.name, status: 'queued' } },
      el('span', { className: 'upload-name', text: file.name }), bar, status);
    $('#upload-list').prepend(item);
    return { item, bar, status };
  }

  function setUploadStatus(row, status, text) {
    row.item.dataset.status = status;
    row.status.textContent = text;
    row.status.classList.toggle('error', status === 'error');
  }

  function upload(file, row, acl) {
    if (!canWrite()) {
      setUploadStatus(row, 'error', 'Cancelled: signed out');
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open('PUT', documentPath(file.name));
      xhr.setRequestHeader('Authorization', `Bearer ${session.key}`);
      xhr.setRequestHeader('Accept', 'application/json');
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) row.bar.value = Math.round((100 * event.loaded) / event.total);
      };
      xhr.onload = () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          let result = {};
          try {
            result = JSON.parse(xhr.responseText);
          } catch (_) {
            // accepted without a JSON body
          }
          row.bar.value = 100;
          const parts = [result.state || 'accepted'];
          if (result.version !== undefined) parts.push(`v${result.version}`);
          if (result.unchanged) parts.push('unchanged');
          setUploadStatus(row, 'done', parts.join(' · '));
          if (result.version !== undefined) row.item.dataset.version = String(result.version);
        } else {
          const error = errorFrom(xhr.status, xhr.responseText);
          setUploadStatus(row, 'error', `${error.code}: ${error.message}`);
        }
        loadDocuments();
        resolve();
      };
      xhr.onerror = () => {
        setUploadStatus(row, 'error', 'network_error: the upload did not reach the server');
        resolve();
      };
      const form = new FormData();
      form.append('file', file, file.name);
      if (acl) form.append('acl', acl);
      setUploadStatus(row, 'uploading', 'Uploading…');
      xhr.send(form);
    });
  }

  function wireDropzone() {
    const zone = $('#dropzone');
    const input = $('#file-input');
    const choose = () => input.click();
    zone.addEventListener('click', choose);
    zone.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        choose();
      }
    });
    for (const type of ['dragenter', 'dragover']) {
      zone.addEventListener(type, (event) => {
        event.preventDefault();
        if (event.dataTransfer) event.dataTransfer.dropEffect = 'copy';
        zone.classList.add('dragover');
      });
    }
    zone.addEventListener('dragleave', () => zone.classList.remove('dragover'));
    zone.addEventListener('drop', (event) => {
      event.preventDefault();
      zone.classList.remove('dragover');
      if (event.dataTransfer) queueUploads(Array.from(event.dataTransfer.files));
    });
    input.addEventListener('change', () => {
      queueUploads(Array.from(input.files));
      input.value = '';
    });
    // A file dropped beside the zone must not make the browser navigate away to it.
    for (const type of ['dragover', 'drop']) window.addEventListener(type, (e) => e.preventDefault());
  }

  // ---- search and answers ---------------------------------------------------------------

  async function submitting(form, work) {
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    clearError();
    try {
      await work();
    } catch (error) {
      fail(error);
    } finally {
      button.disabled = false;
    }
  }

  function passageCard(tag, heading, meta, text, data) {
    return el(tag, { className: 'passage', tabindex: -1, dataset: data },
      el('div', { className: 'passage-head' }, ...heading, el('span', { className: 'muted small', text: meta })),
      el('p', { className: 'passage-text', text }));
  }

  function hitCard(hit) {
    const meta = [`chunk ${hit.chunk_index}`, `v${hit.version}`];
    if (hit.page !== null && hit.page !== undefined) meta.push(`p. ${hit.page}`);
    meta.push(`score ${Number(hit.score).toFixed(3)}`);
    return passageCard('article', [el('strong', { text: hit.doc_id })], meta.join(' · '), hit.text,
      { docId: hit.doc_id, chunkIndex: hit.chunk_index });
  }

  async function search(event) {
    event.preventDefault();
    const query = $('#search-query').value.trim();
    if (!query) return;
    await submitting(event.target, async () => {
      const result = await api('POST', tenantPath('/search'), { query, k: 10, mode: $('#search-mode').value });
      $('#search-results').replaceChildren(...result.hits.map(hitCard));
      $('#search-summary').textContent = result.hits.length
        ? `${result.hits.length} passage(s)` : 'No passage matches.';
      $('#search-summary').hidden = false;
    });
  }

  function citationButton(number) {
    return el('button', {
      type: 'button', className: 'citation', text: `[${number}]`,
      'aria-label': `Show source ${number}`, dataset: { citation: number },
      onclick: () => highlightSource(number),
    });
  }

  // The answer's text with every [n] naming a source turned into a citation button.
  function answerNodes(text, numbers) {
    const nodes = [];
    let last = 0;
    for (const match of text.matchAll(MARKER)) {
      nodes.push(text.slice(last, match.index));
      for (const number of match[1].split(',').map((n) => Number(n.trim()))) {
        nodes.push(numbers.has(number) ? citationButton(number) : `[${number}]`);
      }
      last = match.index + match[0].length;
    }
    nodes.push(text.slice(last));
    return nodes;
  }

  function sourceCard(citation) {
    const chunks = citation.chunk_indexes;
    const meta = [`v${citation.version}`,
      chunks.length > 1 ? `chunks ${chunks[0]}–${chunks[chunks.length - 1]}` : `chunk ${chunks[0]}`];
    if (citation.page !== null && citation.page !== undefined) meta.push(`p. ${citation.page}`);
    if (citation.filename && citation.filename !== citation.doc_id) meta.push(citation.filename);
    const heading = [el('span', { className: 'source-number', text: `[${citation.number}]` }),
      el('strong', { text: citation.doc_id })];
    return passageCard('li', heading, meta.join(' · '), citation.text, {
      citation: citation.number, docId: citation.doc_id, chunkIndex: chunks[0],
      chunkIndexes: chunks.join(','),
    });
  }

  function highlightSource(number) {
    for (const card of document.querySelectorAll('.passage.highlighted')) {
      card.classList.remove('highlighted');
    }
    const cards = document.querySelectorAll(`#sources [data-citation="${Number(number)}"]`);
    for (const card of cards) card.classList.add('highlighted');
    if (cards.length) {
      cards[0].scrollIntoView({ behavior: 'smooth', block: 'center' });
      cards[0].focus({ preventScroll: true });
    }
  }

  async function ask(event) {
    event.preventDefault();
    const question = $('#ask-question').value.trim();
    if (!question) return;
    await submitting(event.target, async () => {
      // Streamed (server-sent events): the answer shows as it is written.
      $('#answer-kind').textContent = 'Searching the documents and writing the answer…';
      $('#answer-text').replaceChildren();
      $('#sources').replaceChildren();
      $('#sources-title').hidden = true;
      $('#answer').hidden = false;
      $('#answer').setAttribute('aria-busy', 'true');
      let text = '';
      try {
        await answerEvents({ question, k: 8, stream: true, mode: $('#ask-mode').value }, (name, data) => {
          if (name === 'delta') {
            text += data.text;
            $('#answer-text').textContent = text;
          } else if (name === 'error') {
            const error = data.error || {};
            throw new ApiError(200, error.code || 'error', error.message || 'The answer failed.', error.details);
          } else if (name === 'done') {
            const numbers = new Set(data.citations.map((c) => c.number));
            $('#answer-kind').textContent = data.generated
              ? 'Generated by the language model from the sources below'
              : 'Extractive answer: sentences quoted from the sources below';
            $('#answer-text').replaceChildren(...answerNodes(data.answer, numbers));
            $('#sources').replaceChildren(...data.citations.map(sourceCard));
            $('#sources-title').hidden = data.citations.length === 0;
          }
        });
      } finally {
        $('#answer').removeAttribute('aria-busy');
      }
    });
  }

  // POST /answer with stream: true; ``handle(name, data)`` per server-sent event, in order.
  async function answerEvents(body, handle) {
    let response;
    try {
      response = await fetch(tenantPath('/answer'), {
        method: 'POST',
        headers: {
          Accept: 'text/event-stream',
          Authorization: `Bearer ${session.key}`,
          'Content-Type': 'application/json',
        },
        body: JSON.stringify(body),
      });
    } catch (_) {
      throw new ApiError(0, 'network_error', 'The server could not be reached.');
    }
    if (!response.ok) throw errorFrom(response.status, await response.text());
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('event: ')) name = line.slice(7);
          else if (line.startsWith('data: ')) data.push(line.slice(6));
        }
        handle(name, JSON.parse(data.join('\n') || 'null'));
      }
      if (done) return;
    }
  }

  // ---- administration: tenants (root), keys and the audit log (root, tenant admins) ---------

  // The tenant administered: the admin key's own, or the one the root key picked.
  const adminTenant = () => (session.whoami.role === 'root'
    ? $('#admin-tenant').value : session.whoami.tenant);
  const adminPath = (suffix) => `/v1/tenants/${encodeURIComponent(adminTenant())}${suffix}`;

  async function loadTenants(selected) {
    let listed;
    try {
      listed = await api('GET', '/v1/tenants');
    } catch (error) {
      fail(error);
      return;
    }
    const select = $('#admin-tenant');
    select.replaceChildren(...listed.tenants.map((t) => el('option', { value: t.id, text: t.id })));
    if (selected) select.value = selected;
    loadAdmin();
  }

  async function loadAdmin() {
    if (!adminTenant()) {
      $('#keys-body').replaceChildren();
      $('#audit-body').replaceChildren();
      return;
    }
    try {
      const [keys, audit] = await Promise.all([
        api('GET', adminPath('/keys')),
        api('GET', adminPath('/audit?limit=50')),
      ]);
      $('#keys-body').replaceChildren(...keys.keys.map(keyRow));
      $('#audit-body').replaceChildren(...audit.events.map(auditRow));
    } catch (error) {
      fail(error);
    }
  }

  function keyRow(key) {
    const revoke = key.revoked_at ? null : el('button', {
      type: 'button', className: 'button secondary small revoke-button', text: 'Revoke',
      onclick: () => revokeKey(key.id),
    });
    return el('tr', { dataset: { keyId: key.id } },
      el('td', {}, el('code', { text: key.id }), key.name ? el('div', { className: 'muted small', text: key.name }) : null),
      el('td', { text: key.role }),
      el('td', { className: 'key-groups', text: key.groups ? key.groups.join(', ') : 'all' }),
      el('td', { text: key.revoked_at ? 'revoked' : 'active' }),
      el('td', { className: 'actions' }, revoke));
  }

  function auditRow(event) {
    const when = new Date(event.at * 1000).toISOString().replace('T', ' ').slice(0, 19);
    return el('tr', { dataset: { action: event.action } },
      el('td', { className: 'small', text: when }),
      el('td', { className: 'small', text: event.actor }),
      el('td', { text: event.action }),
      el('td', { className: 'small', text: event.target }),
      el('td', { text: event.outcome }));
  }

  async function createTenant(event) {
    event.preventDefault();
    const id = $('#tenant-id').value.trim();
    if (!id) return;
    await submitting(event.target, async () => {
      const made = await api('POST', '/v1/tenants', { id });
      $('#tenant-id').value = '';
      await loadTenants(made.id);
    });
  }

  async function createKey(event) {
    event.preventDefault();
    if (!adminTenant()) return;
    const groups = $('#key-groups').value.split(',').map((g) => g.trim()).filter(Boolean);
    const body = { role: $('#key-role').value };
    if ($('#key-name').value.trim()) body.name = $('#key-name').value.trim();
    if (groups.length) body.groups = groups;
    await submitting(event.target, async () => {
      const made = await api('POST', adminPath('/keys'), body);
      $('#new-key').textContent = made.key;
      $('#new-key-box').hidden = false;
      $('#key-groups').value = '';
      $('#key-name').value = '';
      await loadAdmin();
    });
  }

  async function revokeKey(keyId) {
    try {
      await api('DELETE', adminPath(`/keys/${encodeURIComponent(keyId)}`));
    } catch (error) {
      fail(error);
      return;
    }
    loadAdmin();
  }

  // ---- start ----------------------------------------------------------------------------

  function start() {
    $('#signin-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const key = $('#api-key').value.trim();
      if (key) signIn(key);
    });
    $('#signout-button').addEventListener('click', signOut);
    $('#alert-dismiss').addEventListener('click', clearError);
    $('#refresh-button').addEventListener('click', loadDocuments);
    $('#search-form').addEventListener('submit', search);
    $('#ask-form').addEventListener('submit', ask);
    $('#tenant-form').addEventListener('submit', createTenant);
    $('#key-form').addEventListener('submit', createKey);
    $('#admin-tenant').addEventListener('change', () => loadAdmin());
    wireDropzone();
    render();
    const saved = sessionStorage.getItem(KEY_STORAGE);
    if (saved) signIn(saved);
  }

  start();
})();
