// Small text helpers: ages, numbers, shell quoting.  Everything the console
// shows from the API goes into the page as text (JSX children), never as
// HTML, so none of these escape anything for HTML.

export function age(unixSeconds, now = Date.now() / 1000) {
    if (!unixSeconds) return '';
    let s = Math.max(0, Math.floor(now - unixSeconds));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m`;
    if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
}

export function when(unixSeconds) {
    if (!unixSeconds) return 'never';
    return new Date(unixSeconds * 1000).toISOString().replace('T', ' ').slice(0, 19) + ' UTC';
}

export function num(x, digits = 1) {
    if (x === null || x === undefined || Number.isNaN(x)) return '–';
    return Number.isInteger(x) ? String(x) : x.toFixed(digits);
}

/* a string as one shell word, for the copyable snippets */
export function shellWord(s) {
    return `'${String(s).replace(/'/g, `'\\''`)}'`;
}

/* only http(s) URLs become links: anything else stays text */
export function safeHref(url) {
    return typeof url === 'string' && /^https?:\/\//i.test(url) ? url : null;
}
