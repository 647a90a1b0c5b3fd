// Bundles the web console into static files that nginx serves
// (conf/nginx/dstack-console.conf): index.html, and under assets/ the
// script and the style sheet named by the hash of their content, so that
// they are cached for good and a new build is a new name.  Nothing is
// fetched at run time: preact, its signals and uPlot are in the bundle.
//
//   node console/build.mjs NPM_DIR OUT_DIR
//
// NPM_DIR holds node_modules (npm ci of console/package.json, done by the
// Makefile in build/console-npm); OUT_DIR is replaced whole.

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const [npmDir, outDir] = process.argv.slice(2);
if (!npmDir || !outDir) {
    console.error('usage: node console/build.mjs NPM_DIR OUT_DIR');
    process.exit(2);
}
const here = path.dirname(fileURLToPath(import.meta.url));
const modules = path.resolve(npmDir, 'node_modules');
const esbuild = createRequire(path.join(modules, 'x.js'))('esbuild');

const tmp = `${outDir}.tmp`;
fs.rmSync(tmp, { recursive: true, force: true });

const result = await esbuild.build({
    entryPoints: [path.join(here, 'src/main.jsx')],
    bundle: true,
    minify: true,
    sourcemap: false,
    format: 'esm',
    target: ['chrome110', 'firefox110', 'safari16'],
    jsx: 'automatic',
    jsxImportSource: 'preact',
    nodePaths: [modules],
    outdir: path.join(tmp, 'assets'),
    entryNames: '[name]-[hash]',
    assetNames: '[name]-[hash]',
    metafile: true,
    legalComments: 'eof',
    logLevel: 'warning',
});

// the hashed names of the entry's script and style sheet
let script, style;
for (const [file, out] of Object.entries(result.metafile.outputs)) {
    if (!out.entryPoint) continue;
    if (file.endsWith('.js')) script = path.basename(file);
    if (out.cssBundle) style = path.basename(out.cssBundle);
}
if (!script || !style) {
    console.error('console/build.mjs: no script or style sheet was built');
    process.exit(1);
}

const html = fs.readFileSync(path.join(here, 'index.html'), 'utf8')
    .replace('%SCRIPT%', `/assets/${script}`)
    .replace('%STYLE%', `/assets/${style}`);
fs.writeFileSync(path.join(tmp, 'index.html'), html);

fs.rmSync(outDir, { recursive: true, force: true });
fs.renameSync(tmp, outDir);
console.log(`console: ${outDir}/index.html, assets/${script}, assets/${style}`);
