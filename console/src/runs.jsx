// Runs of the project: status, replicas ready/desired, URL, model, age;
// refreshed every second.

import { get, withProject } from './api.js';
import { usePoll } from './poll.js';
import { age, safeHref } from './format.js';
import { ErrorNote, Status } from './widgets.jsx';

export function readyCount(run) {
    return (run.replicas || []).filter((r) => r.ready && !r.draining).length;
}

function RunRow({ run }) {
    const href = safeHref(run.url);
    return (
        <tr data-testid="run-row" data-run={run.name}>
            <td><a href={`#/runs/${encodeURIComponent(run.name)}`}>{run.name}</a></td>
            <td><Status status={run.status} /></td>
            <td class="num" data-testid="run-replicas">{readyCount(run)}/{run.desired}</td>
            <td>{href ? <a href={href} rel="noreferrer" target="_blank">{run.url}</a> : run.url}</td>
            <td>{run.model ? run.model.name : ''}</td>
            <td class="num">{age(run.submitted_at)}</td>
            <td class="message">{run.message}</td>
        </tr>
    );
}

export function RunsPage() {
    const { data, error } = usePoll(() => get(withProject('/api/runs')), 1000);
    const runs = data ? data.runs : [];
    return (
        <section>
            <h2>Runs</h2>
            <ErrorNote error={error} />
            {data && runs.length === 0 &&
                <p class="empty">No runs in this project. Deploy one with <code>dstackctl apply -f .dstack.yml</code>.</p>}
            {runs.length > 0 &&
                <table class="grid" data-testid="runs">
                    <thead><tr><th>Name</th><th>Status</th><th>Ready</th><th>URL</th>
                        <th>Model</th><th>Age</th><th>Message</th></tr></thead>
                    <tbody>{runs.map((r) => <RunRow run={r} key={r.name} />)}</tbody>
                </table>}
        </section>
    );
}
