// Small pieces shared by the pages.

import { useState } from 'preact/hooks';

export function ErrorNote({ error }) {
    if (!error) return null;
    return <p class="error" role="alert" data-testid="error">{error.message}</p>;
}

export function Status({ status }) {
    return <span class={`status s-${String(status).replace(/[^a-z]/g, '')}`}>{status}</span>;
}

/* a button that asks first: the action runs only after "Confirm" */
export function Confirm({ label, question, onConfirm, danger, testid }) {
    const [asking, setAsking] = useState(false);
    const [busy, setBusy] = useState(false);
    if (!asking)
        return <button class={danger ? 'danger' : ''} data-testid={testid}
            onClick={() => setAsking(true)}>{label}</button>;
    const go = async () => {
        setBusy(true);
        try { await onConfirm(); } finally { setBusy(false); setAsking(false); }
    };
    return (
        <span class="confirm" role="group">
            <span>{question}</span>
            <button class={danger ? 'danger' : ''} disabled={busy}
                data-testid={testid && `${testid}-confirm`} onClick={go}>Confirm</button>
            <button disabled={busy} onClick={() => setAsking(false)}>Cancel</button>
        </span>
    );
}

/* text with a copy button (the clipboard needs https or localhost) */
export function Copyable({ text, testid }) {
    const [copied, setCopied] = useState(false);
    const copy = async () => {
        try {
            await navigator.clipboard.writeText(text);
            setCopied(true);
            setTimeout(() => setCopied(false), 1500);
        } catch { /* no clipboard here: the text is selectable */ }
    };
    return (
        <div class="copyable">
            <pre data-testid={testid}>{text}</pre>
            <button onClick={copy}>{copied ? 'Copied' : 'Copy'}</button>
        </div>
    );
}
