// The console's shell: sign-in gate, header (projects, user, sign out),
// and the pages by the URL's fragment (#/runs, #/runs/NAME, #/models,
// #/tokens), so that nginx serves one index.html and nothing else.

import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { token, me, project, projects, chooseProject, signOut } from './session.js';
import { get } from './api.js';
import { SignIn } from './signin.jsx';
import { RunsPage } from './runs.jsx';
import { RunPage } from './run.jsx';
import { ModelsPage } from './models.jsx';
import { TokensPage } from './tokens.jsx';
import 'uplot/dist/uPlot.min.css';
import './style.css';

function useRoute() {
    const [hash, setHash] = useState(location.hash);
    useEffect(() => {
        const on = () => setHash(location.hash);
        addEventListener('hashchange', on);
        return () => removeEventListener('hashchange', on);
    }, []);
    const parts = hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
    return parts[0] ? parts : ['runs'];
}

function ProjectPicker() {
    const list = projects.value;
    if (list.length < 2) return <span class="project" data-testid="project">{project.value}</span>;
    return (
        <select class="project" data-testid="project" value={project.value}
            onChange={(e) => chooseProject(e.currentTarget.value)}>
            {list.map((p) => <option value={p.name}>{p.name} ({p.role})</option>)}
        </select>
    );
}

function Header({ page }) {
    const user = me.value;
    const tab = (name, label) => (
        <a href={`#/${name}`} class={page === name ? 'tab on' : 'tab'}>{label}</a>
    );
    return (
        <header>
            <span class="brand">dstack gateway</span>
            <nav>{tab('runs', 'Runs')}{tab('models', 'Models')}{tab('tokens', 'Tokens')}</nav>
            <span class="grow" />
            <ProjectPicker />
            <span class="user" data-testid="user">
                {user ? `${user.name} (${user.global_role})` : ''}
            </span>
            <button class="link" onClick={() => { signOut(); location.hash = '#/runs'; }}>
                Sign out
            </button>
        </header>
    );
}

function Console() {
    const route = useRoute();

    /* a token kept in this tab from before: still good? */
    useEffect(() => {
        if (!token.value || me.value) return;
        get('/api/users/me').then((u) => { me.value = u; })
            .catch(() => { signOut(); });
    }, [token.value]);

    useEffect(() => {
        if (!me.value) return;
        get('/api/projects').then((r) => {
            projects.value = r.projects || [];
            if (!projects.value.some((p) => p.name === project.value) && projects.value.length)
                chooseProject(projects.value[0].name);
        }).catch(() => { projects.value = []; });
    }, [me.value]);

    if (!token.value) return <SignIn />;
    if (!me.value) return <p class="loading">Signing in…</p>;

    const [page, arg] = route;
    let body;
    if (page === 'runs' && arg) body = <RunPage name={arg} key={`${project.value}/${arg}`} />;
    else if (page === 'runs') body = <RunsPage key={project.value} />;
    else if (page === 'models') body = <ModelsPage key={project.value} />;
    else if (page === 'tokens') body = <TokensPage key={project.value} />;
    else body = <p class="error">No page "{page}" here.</p>;
    return (
        <>
            <Header page={page} />
            <main>{body}</main>
        </>
    );
}

render(<Console />, document.getElementById('app'));
