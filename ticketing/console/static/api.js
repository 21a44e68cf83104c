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

// Every ticket matching ``params``, page by page. The API caps a page at max_page_size:
// today it answers a smaller page (its ``limit``), a strict API answers 422, and then a
// smaller page size is tried.
const PAGE_SIZES = [500, 200, 100, 50];
let pageSize = PAGE_SIZES[0];

export async function allTickets(params = {}) {
  const items = [];
  for (let offset = 0; ;) {
    let page;
    try {
      page = await api(`/tickets${query({ ...params, limit: pageSize, offset })}`);
    } catch (err) {
      const smaller = PAGE_SIZES.find((size) => size < pageSize);
      if (err instanceof ApiError && err.status === 422 && smaller) { pageSize = smaller; continue; }
      throw err;
    }
    items.push(...page.items);
    pageSize = Math.min(pageSize, page.limit);
    offset += page.items.length;
    if (page.items.length === 0 || items.length >= page.total) return items;
  }
}

export const OPEN_STATUSES = ['pending_review', 'dispatched', 'accepted', 'returned', 'reopened'];

// Open tickets in one listing (the API's ``open=true``: the statuses above).
export async function openTickets(params = {}) {
  return allTickets({ ...params, open: 'true' });
}
