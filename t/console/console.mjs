// The web console in a real browser (Debian's chromium, driven by
// playwright-core), against the demo's gateway that t/99-console.t
// started.  Each check prints one line, "check<TAB>1|0<TAB>name<TAB>diag",
// which t/99-console.t turns into a test; screenshots go to $SHOTS.
//
// Environment: CONSOLE_URL, ADMIN_TOKEN, SERVICE_TOKEN, SERVICE_URL (the
// demo's hello, plain HTTP), RUN (hello), XSS_RUN, XSS_MODEL, SHOTS,
// PLAYWRIGHT (the playwright-core module's path).

import { execFileSync, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';

const env = process.env;
const { chromium } = createRequire(import.meta.url)(env.PLAYWRIGHT);

let failures = 0;
function check(ok, name, diag = '') {
    if (!ok) failures++;
    const d = String(diag).replace(/\s+/g, ' ').slice(0, 600);
    console.log(`check\t${ok ? 1 : 0}\t${name}\t${d}`);
    return ok;
}

async function waitFor(fn, ms = 15000, step = 250) {
    const end = Date.now() + ms;
    let last;
    while (Date.now() < end) {
        try {
            last = await fn();
            if (last) return last;
        } catch (e) {
            last = e;
        }
        await new Promise((r) => setTimeout(r, step));
    }
    return false;
}

/* a request to the service with curl: its status code */
function serviceStatus(token) {
    try {
        return execFileSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}',
            '-H', `Authorization: Bearer ${token}`, `${env.SERVICE_URL}/`],
            { encoding: 'utf8', timeout: 10000 });
    } catch (e) {
        return `curl failed: ${e.message}`;
    }
}

/* requests to the service for `seconds`, 4 at a time, distinct paths */
function startLoad(seconds) {
    const script = `end=$((SECONDS+${seconds})); i=0
        while [ $SECONDS -lt $end ]; do
            for j in 1 2 3 4; do
                curl -s -o /dev/null -H "Authorization: Bearer $SERVICE_TOKEN" \
                    "$SERVICE_URL/console-load-$i-$j" &
            done
            wait; i=$((i+1))
        done`;
    return spawn('bash', ['-c', script], { stdio: 'ignore', env });
}

const shots = env.SHOTS;
fs.mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
        '--disable-quic', '--no-first-run', '--disable-component-update',
        '--disable-sync', '--host-resolver-rules=MAP *.localhost 127.0.0.1'],
});
const context = await browser.newContext({
    ignoreHTTPSErrors: true,        /* the demo's private CA */
    viewport: { width: 1280, height: 900 },
});
const page = await context.newPage();

const cspViolations = [];
const pageErrors = [];
const requests = [];
page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
});
page.on('pageerror', (e) => pageErrors.push(e.message));
page.on('request', (r) => requests.push(r.url()));
await page.exposeFunction('__cspViolation', (v) => cspViolations.push(v));
await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation',
        (e) => window.__cspViolation(`${e.violatedDirective} ${e.blockedURI}`));
});

const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
const text = (sel) => page.locator(sel).first().innerText();

try {
    // ---- sign in ---------------------------------------------------------
    await page.goto(env.CONSOLE_URL);
    check(await page.getByTestId('token-input').isVisible(),
        'the console opens on its sign-in form');
    await shot('signin');

    await page.getByTestId('token-input').fill('dst_this-token-does-not-exist_0000');
    await page.getByTestId('sign-in').click();
    const wrong = await waitFor(() => text('[data-testid=signin-error]'));
    check(/not accepted/.test(wrong || ''), 'a wrong token: a clear error', wrong);
    await shot('signin-wrong-token');

    await page.getByTestId('token-input').fill(env.SERVICE_TOKEN);
    await page.getByTestId('sign-in').click();
    const svc = await waitFor(async () => {
        const t = await text('[data-testid=signin-error]');
        return /service token/.test(t) && t;
    });
    check(svc, 'a service token: told it opens services, not the console', svc);

    await page.getByTestId('token-input').fill(env.ADMIN_TOKEN);
    await page.getByTestId('sign-in').click();
    const user = await waitFor(() => text('[data-testid=user]'));
    check(/admin/.test(user || ''), 'the admin token signs in', user);
    check(!page.url().includes(env.ADMIN_TOKEN) &&
          !requests.some((u) => u.includes(env.ADMIN_TOKEN)),
        'the token is in no URL, the page\'s or a request\'s');
    check((await context.cookies()).length === 0, 'no cookie is set');
    const stored = await page.evaluate(() => sessionStorage.getItem('dstack.token'));
    check(stored === env.ADMIN_TOKEN, 'the token is kept in the tab\'s session storage');

    // ---- runs ------------------------------------------------------------
    const row = page.locator(`[data-testid=run-row][data-run="${env.RUN}"]`);
    const ready = await waitFor(async () => {
        const t = await row.locator('[data-testid=run-replicas]').innerText();
        return /^2\/2$/.test(t) && t;
    });
    check(ready, `the runs page lists ${env.RUN} with 2/2 replicas ready`,
        await row.count() ? await row.innerText() : 'no row');
    await shot('runs');

    // ---- a run: replicas, live chart, logs -------------------------------
    await row.locator('a').first().click();
    const reps = await waitFor(async () => {
        const n = await page.getByTestId('replica-row').count();
        return n >= 2 && n;
    });
    check(reps >= 2, 'the run page shows its replicas', `rows: ${reps}`);
    const replicaText = await page.getByTestId('replicas').innerText();
    check(/ready/.test(replicaText) && /local/.test(replicaText),
        'replicas show their state and backend', replicaText);

    const chart = page.getByTestId('chart-rps');
    await waitFor(async () => Number(await chart.getAttribute('data-points')) > 0);
    const before = Number(await chart.getAttribute('data-total'));
    const load = startLoad(20);
    const moved = await waitFor(async () => {
        const now = Number(await chart.getAttribute('data-total'));
        return now >= before + 20 && now;
    }, 20000);
    check(moved, 'the requests chart moves while a load runs',
        `window total before ${before}, then ${moved}`);
    const rps = Number(await text('[data-testid=rps-now]'));
    check(rps > 0, 'requests per second now, under load', `rps ${rps}`);
    /* the window is always 300 s wide: its newest second must move on */
    const end1 = Number(await chart.getAttribute('data-end'));
    await page.waitForTimeout(3000);
    const end2 = Number(await chart.getAttribute('data-end'));
    check(end1 > 0 && end2 >= end1 + 2 && end2 <= end1 + 4,
        'the chart takes a new second each second', `newest second ${end1} -> ${end2} in 3 s`);

    const logGrew = await waitFor(async () => /GET \/console-load-\d+/.test(await text('[data-testid=log]')), 15000);
    check(logGrew, 'the log streams: the load\'s requests appear live',
        (await text('[data-testid=log]')).slice(-300));
    await shot('run');
    await new Promise((r) => { load.on('exit', r); setTimeout(r, 25000); });

    // ---- scale (a fixed count of replicas) -------------------------------
    await page.getByTestId('scale-input').fill('3');
    await page.getByTestId('scale').click();
    await page.getByTestId('scale-confirm').click();
    const three = await waitFor(async () => {
        const t = await page.locator('[data-testid=replicas] tbody').innerText();
        return (t.match(/\bready\b/g) || []).length === 3 && t;
    }, 30000);
    check(three, 'scale to 3 (confirmed): a third replica gets ready', three);
    await page.getByTestId('scale-input').fill('2');
    await page.getByTestId('scale').click();
    await page.getByTestId('scale-confirm').click();
    const two = await waitFor(async () => /^2\/2 ready$/.test(
        ((await text('.meta')).match(/\d+\/\d+ ready/) || [''])[0]) , 30000);
    check(two, 'and back to 2', await text('.meta'));

    // ---- payloads stay text ----------------------------------------------
    await page.goto(`${env.CONSOLE_URL}#/runs/${env.XSS_RUN}`);
    /* both lines: the log streams, and the second may come a poll later */
    const xssLog = await waitFor(async () => {
        const t = await text('[data-testid=log]');
        return t.includes('<script>') && t.includes('<img src=x onerror=') && t;
    }, 20000);
    check(xssLog && xssLog.includes('<img src=x onerror='),
        'log lines with HTML are shown as text', xssLog || '');
    const model = await waitFor(() => text('[data-testid=run-model]'));
    check(model === env.XSS_MODEL, 'a model name with HTML is shown as text', model);
    await page.goto(`${env.CONSOLE_URL}#/models`);
    const names = await waitFor(async () => {
        const all = await page.getByTestId('model-name').allInnerTexts();
        return all.includes(env.XSS_MODEL) && all;
    });
    check(names, 'the models page lists it, as text', JSON.stringify(names));
    const curl = await text('[data-testid=model-curl]');
    check(curl.includes('/v1/chat/completions') && curl.includes('$DSTACK_TOKEN') &&
          !curl.includes(env.ADMIN_TOKEN),
        'a copyable curl with the model endpoint and no secret in it', curl);
    const sdk = await text('[data-testid=model-sdk]');
    check(/base_url="https?:\/\/[^"]+\/v1"/.test(sdk), 'an OpenAI SDK snippet with the base URL', sdk);
    await shot('models');
    const injected = await page.evaluate(() => ({
        flag: window.__xss, imgs: document.querySelectorAll('img[src="x"]').length,
        scripts: [...document.scripts].filter((s) => !s.src).length,
    }));
    check(injected.flag === undefined && injected.imgs === 0 && injected.scripts === 0,
        'no payload ran or became an element', JSON.stringify(injected));

    // ---- tokens ----------------------------------------------------------
    await page.goto(`${env.CONSOLE_URL}#/tokens`);
    await page.getByTestId('token-name').fill('console-made');
    await page.getByTestId('token-services').fill(env.RUN);
    await page.getByTestId('token-expiry').selectOption('3600');
    await page.getByTestId('token-create').click();
    const secret = await waitFor(() => text('[data-testid=token-value]'));
    check(/^dst_\S+$/.test(secret || ''), 'a new token\'s secret is shown once', secret);
    check(serviceStatus(secret) === '200', 'the new token opens the service',
        serviceStatus(secret));
    const tokenRow = page.locator('[data-testid=token-row][data-token="console-made"]');
    check(await waitFor(() => tokenRow.count()), 'the new token is listed');
    check(/services: hello/.test(await tokenRow.innerText()) &&
          /UTC/.test(await tokenRow.innerText()),
        'with its scope and expiry', await tokenRow.innerText());
    await shot('tokens');
    await tokenRow.getByTestId('revoke').click();
    await tokenRow.getByTestId('revoke-confirm').click();
    check(await waitFor(async () => (await tokenRow.count()) === 0),
        'revoke (confirmed) takes it off the list');
    check(serviceStatus(secret) === '401', 'the revoked token no longer opens the service',
        serviceStatus(secret));

    // ---- stop a run ------------------------------------------------------
    await page.goto(`${env.CONSOLE_URL}#/runs/${env.XSS_RUN}`);
    await page.getByTestId('stop').click();
    check(await page.getByTestId('stop-confirm').isVisible(), 'stop asks for confirmation');
    await page.getByTestId('stop-confirm').click();
    const stopped = await waitFor(async () => {
        const t = await text('[data-testid=run-name]');
        return /terminat/.test(t) && t;
    }, 30000);
    check(stopped, 'stop: the run terminates', stopped);
    await shot('run-stopped');

    // ---- sign out --------------------------------------------------------
    await page.getByRole('button', { name: 'Sign out' }).click();
    check(await waitFor(() => page.getByTestId('token-input').isVisible()),
        'sign out: back to the sign-in form');
    check(await page.evaluate(() => sessionStorage.getItem('dstack.token')) === null,
        'and the token is forgotten');

    check(cspViolations.length === 0, 'no Content-Security-Policy violation',
        cspViolations.join(' | '));
    check(pageErrors.length === 0, 'no script error on any page', pageErrors.join(' | '));
} catch (e) {
    check(false, 'the browser session ran to its end', e.stack || e.message);
    await shot('failure').catch(() => {});
} finally {
    await browser.close();
}
process.exit(failures ? 1 : 0);
