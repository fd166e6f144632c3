// todo-mcp's read-only page: tasks, conversations, transcripts with tool calls and call
// records, agent state versions. No build step, no dependencies.
//
// Everything shown comes from agents and may be hostile: text goes into the DOM through
// textContent (never innerHTML), and the server's Content-Security-Policy allows no inline
// script or style, so this file and app.css are all the page runs.
'use strict';

const TOKEN_KEY = 'todo-mcp-token';
const TASK_PAGE = 25;
const CONVERSATION_PAGE = 50;
const TRANSCRIPT_PAGE = 50;

const $ = (id) => {
  const element = document.getElementById(id);
  if (!element) throw new Error(`the page has no #${id}`);
  return element;
};

/** An element with optional class names and text. */
function el(tag, className, text) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== undefined && text !== null) element.textContent = String(text);
  return element;
}

const state = {
  signIn: 'bearer', // or 'none': the server runs --no-auth
  token: null,
  tasks: { cursor: null, loaded: false },
  conversations: { cursor: null, loaded: false },
  conversation: { id: null, before: null },
};

// Each area's requests carry its generation, bumped when what it shows starts over (a
// filter changed, another conversation opened, signed out): late answers are dropped.
const generations = { tasks: 0, conversations: 0, conversation: 0 };
const bump = (area) => ++generations[area];

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** GET /ui/api + path with the bearer token; the JSON body, or an ApiError. */
async function api(path, params = {}) {
  const url = new URL(`/ui/api${path}`, window.location.origin);
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined) url.searchParams.set(key, String(value));
  }
  const headers = { Accept: 'application/json' };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let response;
  try {
    response = await fetch(url, { headers, cache: 'no-store', credentials: 'omit' });
  } catch (error) {
    throw new ApiError(0, `The server cannot be reached (${error.message}).`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // A body that is not JSON: the status says enough.
  }
  if (!response.ok) {
    const message = body && body.error && body.error.message;
    throw new ApiError(response.status, message || `HTTP ${response.status}`);
  }
  return body;
}

// ---- Alerts and failures ----------------------------------------------------------------

function showAlert(message) {
  const alert = $('alert');
  alert.textContent = message;
  alert.hidden = false;
}

function clearAlert() {
  $('alert').hidden = true;
  $('alert').textContent = '';
}

/** Reports a failed read; a refused token signs out. */
function fail(error) {
  if (error instanceof ApiError && error.status === 401 && state.signIn === 'bearer') {
    signOut();
    showAlert(`Signed out: ${error.message}`);
    return;
  }
  showAlert(error.message || String(error));
}

// ---- Formatting ---------------------------------------------------------------------------

const timeFormat = new Intl.DateTimeFormat(undefined, {
  dateStyle: 'medium',
  timeStyle: 'medium',
});
const shortTimeFormat = new Intl.DateTimeFormat(undefined, {
  dateStyle: 'short',
  timeStyle: 'medium',
});
const dayFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeZone: 'UTC' });
const dueFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

function formatTime(iso, format = timeFormat) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : format.format(date);
}

/** A time element showing local time, the exact value on hover. */
function timeElement(iso, format = timeFormat) {
  const element = el('time', 'time', formatTime(iso, format));
  element.dateTime = iso;
  element.title = iso;
  return element;
}

/** A due date as given: a day (all day) or a moment. */
function formatDue(due) {
  if (/^\d{4}-\d{2}-\d{2}$/.test(due)) {
    const day = new Date(`${due}T00:00:00Z`);
    return Number.isNaN(day.getTime()) ? due : dayFormat.format(day);
  }
  const moment = new Date(due);
  return Number.isNaN(moment.getTime()) ? due : dueFormat.format(moment);
}

/** Whether a pending task's due date (a day: its end, in UTC) has passed. */
function isOverdue(task) {
  if (task.completed || !task.due) return false;
  const end = /^\d{4}-\d{2}-\d{2}$/.test(task.due)
    ? new Date(`${task.due}T23:59:59.999Z`)
    : new Date(task.due);
  return end.getTime() < Date.now();
}

/** JSON for people; an OpenAI-style JSON-encoded string argument is shown decoded. */
function pretty(value) {
  if (typeof value === 'string') {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }
  return JSON.stringify(value, null, 2);
}

function formatDuration(ms) {
  if (typeof ms !== 'number') return null;
  return ms < 1 ? `${ms.toFixed(2)} ms` : ms < 1000 ? `${ms.toFixed(1)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

// ---- Signing in and out --------------------------------------------------------------------

function showSignedIn(me) {
  $('sign-in').hidden = true;
  $('nav').hidden = false;
  $('who').hidden = false;
  $('who-user').textContent = me.user;
  $('who-scopes').textContent = me.scopes ? `(${me.scopes})` : '';
  $('sign-out').hidden = state.signIn === 'none';
  route();
}

function showSignIn() {
  for (const id of ['nav', 'who', 'view-tasks', 'view-conversations']) $(id).hidden = true;
  $('sign-in').hidden = false;
  $('token').value = '';
  $('token').focus();
}

/** Forgets the token and everything shown with it. */
function signOut() {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  for (const area of Object.keys(generations)) bump(area);
  state.tasks = { cursor: null, loaded: false };
  state.conversations = { cursor: null, loaded: false };
  state.conversation = { id: null, before: null };
  for (const id of ['task-rows', 'conversation-list', 'timeline', 'state-versions']) {
    $(id).replaceChildren();
  }
  $('who-user').textContent = '';
  $('who-scopes').textContent = '';
  $('conversation-body').hidden = true;
  $('conversation-placeholder').hidden = false;
  clearAlert();
  showSignIn();
}

async function signIn(event) {
  event.preventDefault();
  const token = $('token').value.trim();
  if (!token) return;
  clearAlert();
  $('sign-in-button').disabled = true;
  state.token = token;
  try {
    const me = await api('/me');
    sessionStorage.setItem(TOKEN_KEY, token);
    showSignedIn(me);
  } catch (error) {
    state.token = null;
    showAlert(error.status === 401 ? `That token was refused: ${error.message}` : error.message);
  } finally {
    $('sign-in-button').disabled = false;
  }
}

// ---- Views ------------------------------------------------------------------------------------

/** Shows the view the location's hash names: #/tasks, #/conversations[/ID]. */
function route() {
  if ($('who').hidden) return;
  const [, view, id] = window.location.hash.split('/');
  const conversations = view === 'conversations';
  $('view-tasks').hidden = conversations;
  $('view-conversations').hidden = !conversations;
  for (const link of $('nav').querySelectorAll('a')) {
    const current = link.dataset.view === (conversations ? 'conversations' : 'tasks');
    link.classList.toggle('current', current);
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (conversations) {
    if (!state.conversations.loaded) loadConversations(true);
    const wanted = id ? decodeURIComponent(id) : null;
    if (wanted !== state.conversation.id) openConversation(wanted);
  } else if (!state.tasks.loaded) {
    loadTasks(true);
  }
}

// ---- Tasks ------------------------------------------------------------------------------------

async function loadTasks(fresh) {
  const generation = fresh ? bump('tasks') : generations.tasks;
  if (fresh) state.tasks = { cursor: null, loaded: true };
  const more = $('tasks-more');
  more.disabled = true;
  try {
    const page = await api('/tasks', {
      status: $('task-status').value,
      sort: $('task-sort').value,
      limit: TASK_PAGE,
      cursor: state.tasks.cursor,
    });
    if (generation !== generations.tasks) return;
    const rows = $('task-rows');
    if (fresh) rows.replaceChildren();
    for (const task of page.tasks) rows.append(taskRow(task));
    state.tasks.cursor = page.next_cursor;
    more.hidden = !page.next_cursor;
    $('tasks-empty').hidden = rows.childElementCount > 0;
  } catch (error) {
    state.tasks.loaded = false;
    fail(error);
  } finally {
    more.disabled = false;
  }
}

function taskRow(task) {
  const row = el('tr', task.completed ? 'task done' : 'task');
  row.dataset.taskId = task.id;

  const title = el('td', 'task-title');
  title.append(el('span', 'title', task.title));
  if (task.parent_task_id) title.append(el('span', 'chip subtle', 'subtask'));
  if (task.repeat) {
    const repeat = el('span', 'chip subtle', 'repeats');
    repeat.title = task.repeat;
    title.append(repeat);
  }
  if (task.description) title.append(el('p', 'description', task.description));
  row.append(title);

  const status = el('td');
  status.append(task.completed
    ? el('span', 'status status-done', 'done')
    : el('span', 'status status-pending', 'pending'));
  if (task.completed_at) status.title = `completed ${formatTime(task.completed_at)}`;
  row.append(status);

  const due = el('td', 'due');
  if (task.due) {
    const text = el('span', isOverdue(task) ? 'overdue' : '', formatDue(task.due));
    text.title = task.due;
    due.append(text);
  } else {
    due.append(el('span', 'muted', '—'));
  }
  row.append(due);

  const priority = el('td');
  priority.append(el('span', `priority priority-${task.priority}`, task.priority));
  row.append(priority);

  const labels = el('td', 'labels');
  for (const label of task.labels) labels.append(el('span', 'chip', label));
  row.append(labels);
  return row;
}

// ---- Conversations ----------------------------------------------------------------------------

async function loadConversations(fresh) {
  const generation = fresh ? bump('conversations') : generations.conversations;
  if (fresh) state.conversations = { cursor: null, loaded: true };
  const more = $('conversations-more');
  more.disabled = true;
  try {
    const page = await api('/conversations', {
      limit: CONVERSATION_PAGE,
      cursor: state.conversations.cursor,
    });
    if (generation !== generations.conversations) return;
    const list = $('conversation-list');
    if (fresh) list.replaceChildren();
    for (const conversation of page.conversations) list.append(conversationItem(conversation));
    state.conversations.cursor = page.next_cursor;
    more.hidden = !page.next_cursor;
    $('conversations-empty').hidden = list.childElementCount > 0;
    markCurrentConversation();
  } catch (error) {
    state.conversations.loaded = false;
    fail(error);
  } finally {
    more.disabled = false;
  }
}

function conversationItem(conversation) {
  const item = el('li');
  const link = el('a', 'conversation-link');
  link.href = `#/conversations/${encodeURIComponent(conversation.id)}`;
  link.dataset.conversationId = conversation.id;
  link.append(el('span', conversation.title ? 'title' : 'title untitled',
    conversation.title || 'Untitled conversation'));
  const meta = el('span', 'meta');
  meta.append(timeElement(conversation.created_at));
  if (conversation.status === 'archived') meta.append(el('span', 'chip subtle', 'archived'));
  link.append(meta);
  item.append(link);
  return item;
}

function markCurrentConversation() {
  for (const link of $('conversation-list').querySelectorAll('a')) {
    link.classList.toggle('current', link.dataset.conversationId === state.conversation.id);
  }
}

async function openConversation(id) {
  bump('conversation');
  state.conversation = { id, before: null };
  markCurrentConversation();
  $('timeline').replaceChildren();
  $('state-versions').replaceChildren();
  $('conversation-body').hidden = true;
  $('conversation-placeholder').hidden = id !== null;
  if (id === null) return;
  clearAlert();
  await Promise.all([loadTranscript(true), loadStateVersions()]);
}

async function loadTranscript(fresh) {
  const generation = generations.conversation;
  const { id } = state.conversation;
  const earlier = $('timeline-earlier');
  earlier.disabled = true;
  try {
    const page = await api(`/conversations/${encodeURIComponent(id)}/transcript`, {
      limit: TRANSCRIPT_PAGE,
      before: fresh ? null : state.conversation.before,
    });
    if (generation !== generations.conversation) return;
    if (fresh) showConversationHead(page.conversation);
    const items = page.messages.map(timelineItem);
    $('timeline').prepend(...items);
    state.conversation.before = page.next_cursor;
    earlier.hidden = page.next_cursor === null;
    $('timeline-empty').hidden = $('timeline').childElementCount > 0;
  } catch (error) {
    if (generation !== generations.conversation) return;
    if (error.status === 404) {
      $('conversation-placeholder').hidden = false;
      $('conversation-body').hidden = true;
      showAlert('No such conversation among yours.');
    } else {
      fail(error);
    }
  } finally {
    earlier.disabled = false;
  }
}

function showConversationHead(conversation) {
  $('conversation-body').hidden = false;
  $('conversation-placeholder').hidden = true;
  $('conversation-title').textContent = conversation.title || 'Untitled conversation';
  const parts = [`started ${formatTime(conversation.created_at)}`,
    `last active ${formatTime(conversation.updated_at)}`];
  if (conversation.status === 'archived') parts.push('archived');
  $('conversation-meta').textContent = parts.join(' · ');
  $('conversation-meta').title = conversation.id;
  $('conversation-summary').hidden = !conversation.summary;
  $('conversation-summary-text').textContent = conversation.summary || '';
}

/** One entry of the timeline: an agent's message, or the server's record of a call. */
function timelineItem(message) {
  return message.kind === 'call_record' ? callRecordItem(message) : messageItem(message);
}

function itemHead(item, badgeClass, badgeText, message) {
  const head = el('div', 'item-head');
  head.append(el('span', `badge ${badgeClass}`, badgeText));
  item.append(head);
  return {
    head,
    finish() {
      const right = el('span', 'item-meta');
      right.append(el('span', 'message-id', `#${message.id}`), timeElement(message.created_at));
      head.append(right);
    },
  };
}

function messageItem(message) {
  const item = el('li', `item message role-${message.role}`);
  item.dataset.messageId = String(message.id);
  const head = itemHead(item, `role role-${message.role}`, message.role, message);
  if (message.tool_call_id) {
    head.head.append(el('span', 'answers', 'result of '), el('code', 'call-id', message.tool_call_id));
  }
  head.finish();
  if (message.content) item.append(el('div', 'content', message.content));
  const calls = Array.isArray(message.tool_calls) ? message.tool_calls : [];
  if (calls.length > 0) {
    const list = el('ul', 'tool-calls');
    for (const call of calls) {
      const entry = el('li', 'tool-call');
      const line = el('div', 'tool-call-head');
      line.append(el('span', 'arrow', 'calls'), el('span', 'tool-name', call.name),
        el('code', 'call-id', call.id));
      entry.append(line);
      if (call.arguments !== undefined && call.arguments !== null) {
        entry.append(el('pre', 'json', pretty(call.arguments)));
      }
      list.append(entry);
    }
    item.append(list);
  }
  return item;
}

function callRecordItem(message) {
  const record = message.tool_calls && typeof message.tool_calls === 'object' ? message.tool_calls : {};
  const ok = record.ok === true;
  const item = el('li', `item record ${ok ? 'record-ok' : 'record-failed'}`);
  item.dataset.messageId = String(message.id);
  const head = itemHead(item, 'server', 'server', message);
  head.head.append(el('span', 'tool-name', record.tool || '(unknown tool)'));
  head.head.append(ok
    ? el('span', 'outcome outcome-ok', 'ok')
    : el('span', 'outcome outcome-failed',
      record.error && record.error.kind ? `failed: ${record.error.kind}` : 'failed'));
  const duration = formatDuration(record.duration_ms);
  if (duration) head.head.append(el('span', 'duration', duration));
  head.finish();
  if (!ok && record.error && record.error.message) {
    item.append(el('div', 'content error-text', record.error.message));
  }
  const details = el('details', 'record-details');
  details.append(el('summary', null, ok ? 'arguments and result' : 'arguments'));
  details.append(el('div', 'detail-label', 'arguments'), el('pre', 'json', pretty(record.arguments ?? {})));
  if (ok) details.append(el('div', 'detail-label', 'result'), el('pre', 'json', pretty(record.result ?? null)));
  item.append(details);
  return item;
}

// ---- Agent state --------------------------------------------------------------------------------

async function loadStateVersions() {
  const generation = generations.conversation;
  const { id } = state.conversation;
  try {
    const page = await api(`/conversations/${encodeURIComponent(id)}/states`);
    if (generation !== generations.conversation) return;
    const list = $('state-versions');
    list.replaceChildren(...page.versions.map((version, index) => stateVersion(id, version, index === 0)));
    $('states-empty').hidden = page.versions.length > 0;
  } catch (error) {
    // The transcript's request reports a missing conversation; say nothing twice.
    if (generation === generations.conversation && error.status !== 404) fail(error);
  }
}

/** A version as a disclosure that loads its state when first opened (a state may be big). */
function stateVersion(conversationId, version, latest) {
  const details = el('details', 'state-version');
  details.dataset.version = String(version.version);
  const summary = el('summary');
  summary.append(el('span', 'version', `v${version.version}`));
  if (latest) summary.append(el('span', 'chip subtle', 'latest'));
  summary.append(timeElement(version.saved_at, shortTimeFormat));
  details.append(summary);
  const body = el('pre', 'json state-json', 'loading…');
  details.append(body);
  let loaded = false;
  details.addEventListener('toggle', async () => {
    if (!details.open || loaded) return;
    loaded = true;
    const generation = generations.conversation;
    try {
      const saved = await api(
        `/conversations/${encodeURIComponent(conversationId)}/states/${version.version}`);
      if (generation === generations.conversation) body.textContent = pretty(saved.state);
    } catch (error) {
      loaded = false;
      body.textContent = error.message;
    }
  });
  details.open = latest;
  return details;
}

// ---- Start ----------------------------------------------------------------------------------------

async function start() {
  $('sign-in-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', signOut);
  $('tasks-more').addEventListener('click', () => loadTasks(false));
  $('conversations-more').addEventListener('click', () => loadConversations(false));
  $('timeline-earlier').addEventListener('click', () => loadTranscript(false));
  for (const id of ['task-status', 'task-sort']) {
    $(id).addEventListener('change', () => loadTasks(true));
  }
  window.addEventListener('hashchange', route);

  try {
    const response = await fetch('/ui/config.json', { cache: 'no-store', credentials: 'omit' });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    state.signIn = (await response.json()).sign_in;
  } catch (error) {
    showAlert(`The page cannot reach the server (${error.message}).`);
    return;
  }
  state.token = state.signIn === 'bearer' ? sessionStorage.getItem(TOKEN_KEY) : null;
  if (state.signIn === 'bearer' && !state.token) {
    showSignIn();
    return;
  }
  try {
    showSignedIn(await api('/me'));
  } catch (error) {
    fail(error);
    if (!(error instanceof ApiError && error.status === 401)) showSignIn();
  }
}

start();
