// Sign in with a token: a user's token (dstackctl's client.yml has the
// admin's; `dstackctl user create` prints one).  The token is checked with
// GET /api/users/me before it is kept; a service token is refused by the
// API (403) and the page says what it is for.

import { useState } from 'preact/hooks';
import { get } from './api.js';
import { signIn } from './session.js';

function explain(err) {
    if (err.status === 401)
        return `This token is not accepted: ${err.message}. Check that it is whole, not expired and not revoked.`;
    if (err.status === 403)
        return 'This is a service token: it opens services, not the console. Sign in with a user\'s token (the "token:" of dstackctl\'s client.yml, or one from "dstackctl user token create").';
    return `The gateway answered: ${err.message}`;
}

export function SignIn() {
    const [secret, setSecret] = useState('');
    const [error, setError] = useState('');
    const [busy, setBusy] = useState(false);

    const submit = async (e) => {
        e.preventDefault();
        const t = secret.trim();
        if (!t) { setError('Paste a token first.'); return; }
        setBusy(true);
        setError('');
        try {
            const user = await get('/api/users/me', { token: t });
            signIn(t, user);
        } catch (err) {
            setError(explain(err));
        } finally {
            setBusy(false);
        }
    };

    return (
        <form class="signin" onSubmit={submit}>
            <h1>dstack gateway</h1>
            <p>Sign in with your token. It stays in this tab only and is sent to the
                gateway's API as a bearer header.</p>
            <input type="password" name="token" autocomplete="off" spellcheck={false}
                placeholder="dst_…" value={secret} data-testid="token-input"
                onInput={(e) => setSecret(e.currentTarget.value)} />
            <button type="submit" disabled={busy} data-testid="sign-in">Sign in</button>
            {error && <p class="error" role="alert" data-testid="signin-error">{error}</p>}
        </form>
    );
}
