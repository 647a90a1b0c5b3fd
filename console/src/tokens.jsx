// Tokens of the project: list, create (scope, expiry; the secret is shown
// once), revoke.

import { useState } from 'preact/hooks';
import { del, get, post, withProject } from './api.js';
import { usePoll } from './poll.js';
import { when } from './format.js';
import { Confirm, Copyable, ErrorNote } from './widgets.jsx';
import { me } from './session.js';

const EXPIRY = [
    ['never', 0], ['1 hour', 3600], ['1 day', 86400], ['30 days', 30 * 86400],
    ['90 days', 90 * 86400],
];

function scopeText(t) {
    if (t.scope === 'admin') return 'admin';
    return t.services && t.services.length ? `services: ${t.services.join(', ')}` : 'all services';
}

function CreateToken({ onCreated }) {
    const [name, setName] = useState('');
    const [scope, setScope] = useState('services');
    const [services, setServices] = useState('');
    const [expires, setExpires] = useState(0);
    const [error, setError] = useState(null);
    const [created, setCreated] = useState(null);
    const admin = me.value && me.value.global_role === 'admin';

    const submit = async (e) => {
        e.preventDefault();
        const body = { name: name.trim(), scope };
        if (scope === 'services') {
            const list = services.split(/[\s,]+/).filter(Boolean);
            if (list.length) body.services = list;
        }
        if (expires) body.expires_in = expires;
        try {
            const t = await post(withProject('/api/tokens'), body);
            setCreated(t);
            setError(null);
            setName('');
            onCreated();
        } catch (err) {
            setError(err);
        }
    };

    return (
        <form class="create" onSubmit={submit} data-testid="token-form">
            <h3>New token</h3>
            <label>Name <input value={name} data-testid="token-name" required
                onInput={(e) => setName(e.currentTarget.value)} /></label>
            <label>Scope <select value={scope} data-testid="token-scope"
                onChange={(e) => setScope(e.currentTarget.value)}>
                <option value="services">services</option>
                {admin && <option value="admin">admin</option>}
            </select></label>
            {scope === 'services' &&
                <label>Services <input value={services} placeholder="all; or names, comma separated"
                    data-testid="token-services" onInput={(e) => setServices(e.currentTarget.value)} /></label>}
            <label>Expires <select value={expires} data-testid="token-expiry"
                onChange={(e) => setExpires(Number(e.currentTarget.value))}>
                {EXPIRY.map(([label, s]) => <option value={s}>{label}</option>)}
            </select></label>
            <button type="submit" data-testid="token-create">Create</button>
            <ErrorNote error={error} />
            {created &&
                <div class="secret" data-testid="token-secret">
                    <p><b>{created.name}</b>: copy it now, it is not shown again.</p>
                    <Copyable text={created.token} testid="token-value" />
                    <button class="link" onClick={() => setCreated(null)}>Done</button>
                </div>}
        </form>
    );
}

export function TokensPage() {
    const { data, error, refresh } = usePoll(() => get(withProject('/api/tokens')), 5000);
    const [actionError, setActionError] = useState(null);
    const revoke = (name) => async () => {
        try {
            await del(withProject(`/api/tokens/${encodeURIComponent(name)}`));
            setActionError(null);
            refresh();
        } catch (e) {
            setActionError(e);
        }
    };
    const tokens = data ? data.tokens : [];
    return (
        <section>
            <h2>Tokens</h2>
            <p class="muted">Service tokens open this project's services and models and
                cannot sign in here; users' tokens (yours among them) are listed too.</p>
            <ErrorNote error={error || actionError} />
            {tokens.length > 0 &&
                <table class="grid" data-testid="tokens">
                    <thead><tr><th>Name</th><th>Scope</th><th>Created</th><th>Expires</th><th /></tr></thead>
                    <tbody>{tokens.map((t) => (
                        <tr data-testid="token-row" data-token={t.name} key={t.name}>
                            <td>{t.name}</td>
                            <td>{scopeText(t)}</td>
                            <td>{when(t.created)}</td>
                            <td>{t.expires ? when(t.expires) : 'never'}{t.expired ? ' (expired)' : ''}</td>
                            <td><Confirm label="Revoke" danger testid="revoke"
                                question={`Revoke ${t.name}? Requests with it fail at once.`}
                                onConfirm={revoke(t.name)} /></td>
                        </tr>))}
                    </tbody>
                </table>}
            <CreateToken onCreated={refresh} />
        </section>
    );
}
