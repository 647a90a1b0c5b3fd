// One run: its replicas, the autoscaler's decision, the last five minutes
// (requests/s by status class, latency, in-flight and held; every second),
// cold starts, its logs, and stop / abort / scale.

import { useEffect, useMemo, useState } from 'preact/hooks';
import { get, post, runPath } from './api.js';
import { usePoll } from './poll.js';
import { age, num, safeHref, when } from './format.js';
import { CLASSES, emptySeries, mergeSeries, recentRate, windowTotal } from './series.js';
import { Chart } from './chart.jsx';
import { Logs } from './logs.jsx';
import { readyCount } from './runs.jsx';
import { Confirm, ErrorNote, Status } from './widgets.jsx';

const FINISHED = ['terminated', 'failed', 'done'];

function useSeries(name) {
    const [series, setSeries] = useState(emptySeries);
    const [error, setError] = useState(null);
    useEffect(() => {
        let stopped = false;
        let timer = null;
        let s = emptySeries();
        const step = async () => {
            if (stopped) return;
            if (!document.hidden) {
                try {
                    const since = s.end ? `&since=${s.end}` : '';
                    const answer = await get(runPath(name, '/series') + since);
                    s = mergeSeries(s, answer);
                    if (!stopped) { setSeries(s); setError(null); }
                } catch (e) {
                    if (!stopped) setError(e);
                }
            }
            if (!stopped) timer = setTimeout(step, 1000);
        };
        step();
        return () => { stopped = true; clearTimeout(timer); };
    }, [name]);
    return { series, error };
}

function Replicas({ replicas }) {
    const now = Date.now() / 1000;
    return (
        <table class="grid" data-testid="replicas">
            <thead><tr><th>#</th><th>Status</th><th>Backend</th><th>Host</th>
                <th>Address</th><th>Version</th><th>Uptime</th><th>Restarts</th>
                <th>Reason</th></tr></thead>
            <tbody>
                {replicas.map((r) => (
                    <tr data-testid="replica-row" key={`${r.num}.${r.version}.${r.submitted_at}`}>
                        <td class="num">{r.num}</td>
                        <td><Status status={r.draining ? 'draining' : r.ready ? 'ready' : r.status} /></td>
                        <td>{r.backend}</td>
                        <td>{r.host || r.region || ''}</td>
                        <td>{r.address}</td>
                        <td class="num">{r.version}</td>
                        <td class="num">{r.started_at && !FINISHED.includes(r.status) ? age(r.started_at, now) : ''}</td>
                        <td class="num">{r.restarts}</td>
                        <td class="message" data-testid="replica-message">{r.message}</td>
                    </tr>
                ))}
            </tbody>
        </table>
    );
}

function Scaling({ scaling }) {
    if (!scaling) return null;
    return (
        <p class="scaling" data-testid="scaling">
            <b>Autoscaler</b> ({scaling.metric}): {scaling.current} → {scaling.desired} replicas,
            {' '}{scaling.ready} ready, value {num(scaling.value, 2)}.{' '}
            <span class="muted">{scaling.reason}</span>
        </p>
    );
}

function Actions({ run, refresh, setError }) {
    const [count, setCount] = useState(run.desired);
    const act = (path, body) => async () => {
        try { await post(runPath(run.name, path), body); setError(null); refresh(); }
        catch (e) { setError(e); }
    };
    if (FINISHED.includes(run.status)) return null;
    return (
        <div class="actions">
            {run.scalable &&
                <span class="scale">
                    <input type="number" min="0" max="100" value={count} data-testid="scale-input"
                        onInput={(e) => setCount(Number(e.currentTarget.value))} />
                    <Confirm label="Scale" testid="scale"
                        question={`Scale ${run.name} to ${count} replica(s)?`}
                        onConfirm={act('/scale', { replicas: count })} />
                </span>}
            <Confirm label="Stop" testid="stop" danger
                question={`Stop ${run.name}? Replicas drain, then end.`}
                onConfirm={act('/stop', { abort: false })} />
            <Confirm label="Abort" testid="abort" danger
                question={`Abort ${run.name}? Replicas are killed at once.`}
                onConfirm={act('/stop', { abort: true })} />
        </div>
    );
}

function Charts({ series }) {
    const s = series;
    const rps = useMemo(() => [s.x, ...CLASSES.map((c) => s.requests[c])], [s]);
    const latency = useMemo(() => [s.x, s.latency], [s]);
    const load = useMemo(() => [s.x, s.inflight, s.held], [s]);
    const t = s.totals || {};
    return (
        <div class="charts">
            <p class="figures">
                <span data-testid="rps-now">{num(recentRate(s), 1)}</span> req/s now ·{' '}
                <span data-testid="window-total">{windowTotal(s)}</span> requests in 5 min ·
                cold starts <span data-testid="cold-starts">{t.cold_starts ?? 0}</span>
                {t.cold_start_ms_avg != null && ` (avg ${num(t.cold_start_ms_avg / 1000, 1)} s)`} ·
                held <span data-testid="held-total">{t.held_total ?? 0}</span>
                {t.hold_timeouts ? ` (${t.hold_timeouts} timed out)` : ''}
                {s.stats === 'missing' && <span class="warn"> · the gateway's stats do not answer</span>}
            </p>
            <Chart title="Requests/s by status" labels={CLASSES} unit="req/s" data={rps}
                testid="chart-rps" total={windowTotal(s)} stacked />
            <Chart title="Latency (mean, ms)" labels={['latency']} unit="ms" data={latency}
                testid="chart-latency" />
            <Chart title="In flight and held" labels={['in flight', 'held']} unit="requests"
                data={load} testid="chart-load" />
        </div>
    );
}

export function RunPage({ name }) {
    const { data: run, error, refresh } = usePoll(() => get(runPath(name)), 1000, [name]);
    const { series, error: seriesError } = useSeries(name);
    const [actionError, setActionError] = useState(null);
    if (!run) return <section><h2>{name}</h2><ErrorNote error={error} /></section>;
    const href = safeHref(run.url);
    const live = run.replicas.filter((r) => !FINISHED.includes(r.status) && r.status !== 'aborted');
    return (
        <section>
            <p><a href="#/runs">← Runs</a></p>
            <h2 data-testid="run-name">{run.name} <Status status={run.status} /></h2>
            <ErrorNote error={error || actionError} />
            <p class="meta">
                {href ? <a href={href} rel="noreferrer" target="_blank">{run.url}</a> : run.url}
                {' '}· version {run.version} · {readyCount(run)}/{run.desired} ready
                · submitted {when(run.submitted_at)}{run.user ? ` by ${run.user}` : ''}
                {run.model && <> · model <span data-testid="run-model">{run.model.name}</span></>}
            </p>
            {run.message && <p class="message" data-testid="run-message">{run.message}</p>}
            <Actions run={run} refresh={refresh} setError={setActionError} key={run.desired} />
            <Scaling scaling={run.scaling} />
            <h3>Replicas</h3>
            <Replicas replicas={run.replicas} />
            <h3>Last 5 minutes</h3>
            <ErrorNote error={seriesError} />
            <Charts series={series} />
            <h3>Logs</h3>
            <Logs run={run.name} replicas={live.length ? live : run.replicas} />
        </section>
    );
}
