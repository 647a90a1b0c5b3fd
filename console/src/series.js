// The run's last five minutes (GET /api/runs/NAME/series, controld/API.md
// "series"): the first call takes the whole window, each next one only the
// seconds after the newest it has (since=), and the window is kept at
// WINDOW seconds.  Columns, as uPlot wants them: x (unix seconds), then
// one array per figure, null where controld had no stats for a second.

export const WINDOW = 300;
export const CLASSES = ['2xx', '3xx', '4xx', '5xx', 'refused'];

export function emptySeries() {
    return { x: [], requests: Object.fromEntries(CLASSES.map((c) => [c, []])),
             latency: [], inflight: [], held: [], totals: null, stats: 'ok', end: 0 };
}

/* merges an answer into s (a new object), dropping what fell out of the window */
export function mergeSeries(s, answer) {
    const n = Math.max(0, answer.end - answer.start + 1);
    const out = {
        x: s.x.slice(), latency: s.latency.slice(), inflight: s.inflight.slice(),
        held: s.held.slice(),
        requests: Object.fromEntries(CLASSES.map((c) => [c, s.requests[c].slice()])),
        totals: answer.totals || s.totals, stats: answer.stats || 'ok',
        end: Math.max(s.end, answer.end || 0),
    };
    for (let i = 0; i < n; i++) {
        const t = answer.start + i;
        if (out.x.length && t <= out.x[out.x.length - 1]) continue;
        out.x.push(t);
        for (const c of CLASSES) {
            const col = answer.requests && answer.requests[c];
            out.requests[c].push(col ? col[i] : null);
        }
        out.latency.push(answer.latency_ms ? answer.latency_ms[i] : null);
        out.inflight.push(answer.inflight ? answer.inflight[i] : null);
        out.held.push(answer.held ? answer.held[i] : null);
    }
    const drop = out.x.findIndex((t) => t > out.end - WINDOW);
    if (drop > 0) {
        out.x.splice(0, drop);
        out.latency.splice(0, drop);
        out.inflight.splice(0, drop);
        out.held.splice(0, drop);
        for (const c of CLASSES) out.requests[c].splice(0, drop);
    }
    return out;
}

/* requests in the window, all classes (the test watches it move) */
export function windowTotal(s) {
    let n = 0;
    for (const c of CLASSES) for (const v of s.requests[c]) n += v || 0;
    return n;
}

/* requests per second over the last `seconds` seconds */
export function recentRate(s, seconds = 5) {
    const from = s.x.length - seconds;
    let n = 0;
    for (const c of CLASSES)
        for (let i = Math.max(0, from); i < s.x.length; i++) n += s.requests[c][i] || 0;
    return n / seconds;
}
