// The console's one door to the server: the native /v1 API, with the API key from this
// browser tab's sessionStorage. The key is never put in a URL, a cookie or the page.

const KEY = 'odometer.key';
const ORGANIZATION = 'odometer.organization';

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `the server answered ${status}`);
    this.status = status;
    this.code = error.code || 'http_' + status;
    this.details = error.details || [];
  }
}

export const session = {
  signedIn() {
    return sessionStorage.getItem(KEY) !== null;
  },
  organization() {
    try {
      return JSON.parse(sessionStorage.getItem(ORGANIZATION) || 'null');
    } catch {
      return null;
    }
  },
  // Checks the key against the API before keeping it; answers the organization.
  async signIn(key) {
    const response = await fetch('/v1/organization', {
      headers: { authorization: 'Bearer ' + key },
      cache: 'no-store',
      credentials: 'omit',
    });
    const body = await readJson(response);
    if (!response.ok) throw new ApiError(response.status, body);
    sessionStorage.setItem(KEY, key);
    sessionStorage.setItem(ORGANIZATION, JSON.stringify({ id: body.id, name: body.name }));
    return body;
  },
  signOut() {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(ORGANIZATION);
  },
};

async function readJson(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { error: { code: 'not_json', message: text.slice(0, 200) } };
  }
}

// Called when the server refuses the key (revoked, or the session was cleared elsewhere).
let onUnauthorized = () => {};
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

// One call: `query` members that are undefined, null or '' are left out.
export async function api(path, { method = 'GET', query, body } = {}) {
  const key = sessionStorage.getItem(KEY);
  if (key === null) {
    onUnauthorized();
    throw new ApiError(401, { error: { code: 'signed_out', message: 'sign in first' } });
  }
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== '') params.set(name, value);
    }
    const text = params.toString();
    if (text) url += '?' + text;
  }
  const headers = { authorization: 'Bearer ' + key };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
  });
  const data = await readJson(response);
  if (response.status === 401) {
    session.signOut();
    onUnauthorized();
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// Every page of a list (at most `maxPages` of 1000).
export async function all(path, query = {}, maxPages = 20) {
  const items = [];
  let cursor;
  for (let page = 0; page < maxPages; page++) {
    const answer = await api(path, { query: { ...query, limit: 1000, cursor } });
    items.push(...answer.data);
    cursor = answer.next_cursor;
    if (!cursor) return items;
  }
  return items;
}

export const path = (...segments) => segments.map(encodeURIComponent).join('/');
