// The project's models: the OpenAI-compatible endpoint's URL and, per
// model, a curl and an OpenAI SDK snippet to copy.  The snippets read the
// token from $DSTACK_TOKEN: the console never writes a secret into them.

import { get, withProject } from './api.js';
import { usePoll } from './poll.js';
import { shellWord } from './format.js';
import { Copyable, ErrorNote, Status } from './widgets.jsx';

export function curlSnippet(base, model) {
    const body = JSON.stringify({ model, messages: [{ role: 'user', content: 'Hello!' }] });
    return [
        `curl ${shellWord(`${base}/chat/completions`)} \\`,
        `  -H "Authorization: Bearer $DSTACK_TOKEN" \\`,
        `  -H 'Content-Type: application/json' \\`,
        `  -d ${shellWord(body)}`,
    ].join('\n');
}

export function sdkSnippet(base, model) {
    return [
        'import os',
        'from openai import OpenAI',
        '',
        `client = OpenAI(base_url=${JSON.stringify(base)}, api_key=os.environ["DSTACK_TOKEN"])`,
        'answer = client.chat.completions.create(',
        `    model=${JSON.stringify(model)},`,
        '    messages=[{"role": "user", "content": "Hello!"}],',
        ')',
        'print(answer.choices[0].message.content)',
    ].join('\n');
}

function Model({ run }) {
    const { name, url } = run.model;
    return (
        <article class="model" data-testid="model">
            <h3><span data-testid="model-name">{name}</span>{' '}
                <span class="muted">run {run.name}</span> <Status status={run.status} /></h3>
            <p>Base URL: <code data-testid="model-url">{url}</code></p>
            <h4>curl</h4>
            <Copyable text={curlSnippet(url, name)} testid="model-curl" />
            <h4>OpenAI SDK (Python)</h4>
            <Copyable text={sdkSnippet(url, name)} testid="model-sdk" />
        </article>
    );
}

export function ModelsPage() {
    const { data, error } = usePoll(() => get(withProject('/api/runs')), 5000);
    const runs = data ? data.runs.filter((r) => r.model) : [];
    const base = runs.length ? runs[0].model.url : null;
    return (
        <section>
            <h2>Models</h2>
            <ErrorNote error={error} />
            {base && <p>The model endpoint of this project: <code data-testid="models-base">{base}</code>
                {' '}(OpenAI-compatible; <code>GET {base}/models</code> lists them).
                Set <code>DSTACK_TOKEN</code> to a token that opens the service.</p>}
            {data && runs.length === 0 &&
                <p class="empty">No run of this project serves a model (<code>model:</code> in its service file).</p>}
            {runs.map((r) => <Model run={r} key={r.name} />)}
        </section>
    );
}
