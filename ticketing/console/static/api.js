// The one way the page talks to the API: same origin, the session cookie, and the
// session's CSRF token on every change.
let csrf = null;

export function setCsrf(token) { csrf = token; }

export class ApiError extends Error {
  constructor(status, body) {
    const detail = body && body.detail;
    const text = Array.isArray(detail) ? detail.map((d) => d.msg).join('; ')
      : (detail || `HTTP ${status}`);
    super(text);
    this.status = status;
    this.body = body;
  }
}

export async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['X-CSRF-Token'] = csrf;
  const response = await fetch(path, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

// Every ticket matching ``params``, page by page (the API caps a page at max_page_size).
export async function allTickets(params = {}, pageSize = 500) {
  const items = [];
  for (let offset = 0; ; offset += pageSize) {
    const page = await api(`/tickets${query({ ...params, limit: pageSize, offset })}`);
    items.push(...page.items);
    if (page.items.length === 0 || items.length >= page.total) return items;
    pageSize = page.limit;
  }
}

export const OPEN_STATUSES = ['pending_review', 'dispatched', 'accepted', 'returned', 'reopened'];

// Open tickets: one status filter at a time (the list takes a single status today).
export async function openTickets(params = {}) {
  const lists = await Promise.all(OPEN_STATUSES.map((status) => allTickets({ ...params, status })));
  return lists.flat();
}
