// Who is signed in: the token lives in this tab's sessionStorage only (never
// a cookie, never a URL), and goes to the API as a bearer header.  Closing
// the tab or "sign out" forgets it.

import { signal } from '@preact/signals';

const TOKEN_KEY = 'dstack.token';
const PROJECT_KEY = 'dstack.project';

function stored(key) {
    try {
        return sessionStorage.getItem(key) || '';
    } catch {
        return '';      /* storage disabled: memory only */
    }
}

function store(key, value) {
    try {
        if (value) sessionStorage.setItem(key, value);
        else sessionStorage.removeItem(key);
    } catch { /* memory only */ }
}

export const token = signal(stored(TOKEN_KEY));
export const project = signal(stored(PROJECT_KEY) || 'main');
export const me = signal(null);         /* GET /api/users/me */
export const projects = signal([]);     /* GET /api/projects */

export function signIn(secret, user) {
    token.value = secret;
    me.value = user;
    store(TOKEN_KEY, secret);
}

export function signOut() {
    token.value = '';
    me.value = null;
    projects.value = [];
    store(TOKEN_KEY, '');
}

export function chooseProject(name) {
    project.value = name;
    store(PROJECT_KEY, name);
}
