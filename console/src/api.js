// The controld API (controld/API.md) as the console uses it: same origin,
// bearer token, JSON in and out, errors as ApiError with the API's own
// message.  Calls that belong to a project carry ?project=.

import { token, project, signOut } from './session.js';

export class ApiError extends Error {
    constructor(status, message, type) {
        super(message);
        this.status = status;
        this.type = type || '';
    }
}

function headers(secret) {
    return { Authorization: `Bearer ${secret || token.value}` };
}

export function withProject(path) {
    const sep = path.includes('?') ? '&' : '?';
    return `${path}${sep}project=${encodeURIComponent(project.value)}`;
}

async function failure(res) {
    let message = `${res.status} ${res.statusText}`;
    let type = '';
    try {
        const body = await res.json();
        if (body && body.error && typeof body.error.message === 'string') {
            message = body.error.message;
            type = body.error.type || '';
        }
    } catch { /* not JSON: nginx's own page */ }
    return new ApiError(res.status, message, type);
}

export async function call(method, path, body, opts = {}) {
    const init = { method, headers: headers(opts.token), cache: 'no-store' };
    if (body !== undefined) {
        init.headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
    }
    if (opts.signal) init.signal = opts.signal;
    const res = await fetch(path, init);
    if (!res.ok) {
        const err = await failure(res);
        /* the token went away (revoked, expired) while signed in */
        if (res.status === 401 && !opts.token) signOut();
        throw err;
    }
    return res.json();
}

export const get = (path, opts) => call('GET', path, undefined, opts);
export const post = (path, body) => call('POST', path, body);
export const del = (path) => call('DELETE', path);

export const runPath = (name, tail = '') =>
    withProject(`/api/runs/${encodeURIComponent(name)}${tail}`);

/*
 * Follows a replica's log: calls onText with each piece of text as it
 * comes, until the replica ends or the signal aborts.  Resolves when the
 * stream ends.
 */
export async function followLog(run, replica, onText, signal) {
    const path = runPath(run, '/logs') + `&replica=${replica}&follow=1`;
    const res = await fetch(path, { headers: headers(), signal, cache: 'no-store' });
    if (!res.ok) throw await failure(res);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        onText(decoder.decode(value, { stream: true }));
    }
    onText(decoder.decode());
}
