// Drives the official OpenAI SDK (npm package "openai") for
// t/10-openai-sdk.t: one call per run, its result as one JSON line on
// stdout.
//
//   node t/openai/sdk.mjs OP 'JSON ARGS'
//
// Environment:
//   OPENAI_SDK_DIR   the --prefix the SDK was installed into (its
//                    node_modules/openai is used)
//   OPENAI_BASE_URL  e.g. http://gateway.test.local:PORT/v1
//   OPENAI_API_KEY   the bearer token
//   DSTACK_CONNECT   127.0.0.1: every host name resolves to it, so the
//                    base URL carries the real gateway host name
//
// OPs (ARGS):
//   models {}                          client.models.list(), all pages
//   retrieve {model}                   client.models.retrieve(model)
//   chat {model, content, max_tokens}  client.chat.completions.create()
//   stream {model, content, max_tokens, delay_ms, include_usage}
//       the same with stream: true and stream_options.include_usage
//       (unless include_usage is false); each chunk with its arrival
//       time (unix seconds, float)
//   embed {model, input, encoding_format?, dimensions?}
//   complete {model, prompt, max_tokens}   client.completions.create()
//   Any OP's result is {ok: true, ...}; an error thrown by the SDK gives
//   {ok: false, error: {class, status, code, type, param, message, body,
//    is: {NotFoundError, AuthenticationError, PermissionDeniedError,
//         BadRequestError, APIError}}}.

import { createRequire } from 'node:module';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const sdkDir = process.env.OPENAI_SDK_DIR;
if (!sdkDir) {
  console.error('OPENAI_SDK_DIR is not set');
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(sdkDir), 'index.js'));
const OpenAI = require('openai');
const sdkVersion = JSON.parse(fs.readFileSync(
  path.join(path.resolve(sdkDir), 'node_modules', 'openai', 'package.json'), 'utf8')).version;

const [op, argText] = process.argv.slice(2);
const args = argText ? JSON.parse(argText) : {};

const now = () => (performance.timeOrigin + performance.now()) / 1000;

const opts = { maxRetries: 0, timeout: 30000 };
if (process.env.DSTACK_CONNECT) {
  const addr = process.env.DSTACK_CONNECT;
  opts.httpAgent = new http.Agent({
    keepAlive: true,
    lookup: (host, o, cb) => {
      if (o && o.all) cb(null, [{ address: addr, family: 4 }]);
      else cb(null, addr, 4);
    },
  });
}
const client = new OpenAI(opts);

const messages = (a) => [{ role: 'user', content: a.content ?? 'say hello please' }];

async function run() {
  switch (op) {
    case 'models': {
      const data = [];
      for await (const m of client.models.list()) data.push(m);
      return { data };
    }
    case 'retrieve':
      return { model: await client.models.retrieve(args.model) };
    case 'chat': {
      const body = { model: args.model, messages: messages(args) };
      if (args.max_tokens !== undefined) body.max_tokens = args.max_tokens;
      return { completion: await client.chat.completions.create(body) };
    }
    case 'stream': {
      const t0 = now();
      const body = { model: args.model, messages: messages(args), stream: true };
      if (args.include_usage !== false) body.stream_options = { include_usage: true };
      if (args.max_tokens !== undefined) body.max_tokens = args.max_tokens;
      const headers = {};
      if (args.delay_ms !== undefined) headers['X-Test-Delay-Ms'] = String(args.delay_ms);
      const stream = await client.chat.completions.create(body, { headers });
      const t_open = now();
      const chunks = [];
      for await (const chunk of stream) chunks.push({ t: now(), chunk });
      return { t0, t_open, t_end: now(), chunks };
    }
    case 'embed': {
      const body = { model: args.model, input: args.input };
      if (args.encoding_format) body.encoding_format = args.encoding_format;
      if (args.dimensions) body.dimensions = args.dimensions;
      return { embeddings: await client.embeddings.create(body) };
    }
    case 'complete':
      return {
        completion: await client.completions.create({
          model: args.model, prompt: args.prompt, max_tokens: args.max_tokens ?? 3,
        }),
      };
    case 'raw-chat':
      // a body as given (e.g. without "model"), through the SDK's client
      return { completion: await client.chat.completions.create(args.body) };
    default:
      throw new Error(`unknown op ${op}`);
  }
}

try {
  const res = await run();
  process.stdout.write(JSON.stringify({ ok: true, sdk: sdkVersion, ...res }) + '\n');
} catch (e) {
  const is = {};
  for (const k of ['NotFoundError', 'AuthenticationError', 'PermissionDeniedError',
    'BadRequestError', 'RateLimitError', 'InternalServerError', 'APIError',
    'APIConnectionError']) {
    is[k] = typeof OpenAI[k] === 'function' && e instanceof OpenAI[k];
  }
  process.stdout.write(JSON.stringify({
    ok: false,
    sdk: sdkVersion,
    error: {
      class: e && e.constructor ? e.constructor.name : typeof e,
      status: e.status ?? null,
      code: e.code ?? null,
      type: e.type ?? null,
      param: e.param ?? null,
      message: String(e.message ?? e),
      body: e.error ?? null,
      headers: e.headers ?? null,
      is,
    },
  }) + '\n');
}
