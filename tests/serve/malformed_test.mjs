// Hostile and malformed requests against a running `moerun serve`: each gets a 4xx with an OpenAI
// error object, and the server keeps serving other clients (including during a slow-loris client
// that trickles its headers). Usage: node malformed_test.mjs BASE_URL
import net from 'node:net';

const base = process.argv[2];
const {hostname, port} = new URL(base);
let failures = 0, passes = 0;
function check(cond, what, detail = '') {
  if (cond) { passes++; } else { failures++; console.error(`FAIL: ${what} ${detail}`); }
}

async function post(path, body, headers = {'Content-Type': 'application/json'}) {
  const res = await fetch(`${base}${path}`, {method: 'POST', headers, body});
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch (e) { /* not JSON */ }
  return {status: res.status, json, text};
}

async function expect4xx(what, path, body, status) {
  const r = await post(path, body);
  check(r.status === status, `${what}: status ${status}`, `got ${r.status}: ${r.text.slice(0, 200)}`);
  check(r.json && r.json.error && typeof r.json.error.message === 'string' && r.json.error.message.length > 0,
        `${what}: OpenAI error object`, r.text.slice(0, 200));
}

async function healthyAnswer(what) {
  const r = await post('/v1/completions', JSON.stringify({prompt: '12+7=', max_tokens: 4, temperature: 0}));
  check(r.status === 200 && r.json.choices[0].text === '19', `${what}: the server still answers`, r.text.slice(0, 200));
}

const C = '/v1/completions', CH = '/v1/chat/completions';
await expect4xx('bad JSON', C, '{"prompt": "1+1=", ', 400);
await expect4xx('not an object', C, '[1, 2, 3]', 400);
await expect4xx('prompt of the wrong type', C, JSON.stringify({prompt: 5}), 400);
await expect4xx('prompt missing', C, JSON.stringify({max_tokens: 3}), 400);
await expect4xx('empty prompt list', C, JSON.stringify({prompt: []}), 400);
await expect4xx('messages of the wrong type', CH, JSON.stringify({messages: 'hi'}), 400);
await expect4xx('message without a role', CH, JSON.stringify({messages: [{content: 'hi'}]}), 400);
await expect4xx('unknown chat template variable', CH,
                JSON.stringify({messages: [{role: 'user', content: 'hi'}], chat_template_kwargs: {thinking: true}}), 400);
await expect4xx('enable_thinking not a boolean', CH,
                JSON.stringify({messages: [{role: 'user', content: 'hi'}], chat_template_kwargs: {enable_thinking: 1}}),
                400);
await expect4xx('a role the template refuses', CH, JSON.stringify({messages: [{role: 'wizard', content: 'hi'}]}), 400);
await expect4xx('n as a string', C, JSON.stringify({prompt: 'x', n: '2'}), 400);
await expect4xx('n = 0', C, JSON.stringify({prompt: 'x', n: 0}), 400);
await expect4xx('stream as a string', C, JSON.stringify({prompt: 'x', stream: 'yes'}), 400);
await expect4xx('negative max_tokens', C, JSON.stringify({prompt: 'x', max_tokens: -1}), 400);
await expect4xx('huge max_tokens', C, JSON.stringify({prompt: 'x', max_tokens: 1e18}), 400);
await expect4xx('fractional max_tokens', C, JSON.stringify({prompt: 'x', max_tokens: 2.5}), 400);
await expect4xx('max_tokens above uint64', C, '{"prompt": "x", "max_tokens": 123456789012345678901234567890}', 400);
await expect4xx('prompt over the context', C, JSON.stringify({prompt: 'x+'.repeat(5000), max_tokens: 1}), 400);
await expect4xx('unknown model', C, JSON.stringify({model: 'gpt-9', prompt: 'x'}), 404);
await expect4xx('top_p = 0', C, JSON.stringify({prompt: 'x', top_p: 0}), 400);
await expect4xx('temperature NaN-like', C, '{"prompt": "x", "temperature": "NaN"}', 400);
await expect4xx('empty stop string', C, JSON.stringify({prompt: 'x', stop: ['']}), 400);
await expect4xx('stream_options without stream', C, JSON.stringify({prompt: 'x', stream_options: {include_usage: true}}), 400);
await expect4xx('top_logprobs over 20', CH, JSON.stringify({messages: [{role: 'user', content: 'x'}], logprobs: true, top_logprobs: 50}), 400);
await expect4xx('detokenize ids outside the vocabulary', '/detokenize', JSON.stringify({tokens: [-1]}), 400);

// Invalid UTF-8 inside a JSON string.
{
  const bytes = Buffer.concat([Buffer.from('{"prompt": "'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('", "max_tokens": 2}')]);
  const r = await post(C, bytes);
  check(r.status === 400 && r.json && r.json.error, 'invalid UTF-8: 400 with an error object', `${r.status} ${r.text.slice(0, 200)}`);
}
// A 10 MB body.
{
  const r = await post(C, JSON.stringify({prompt: 'a'.repeat(10 * 1024 * 1024)}));
  check(r.status === 413, '10 MB body: 413', `got ${r.status}`);
}
// Unknown route, wrong method.
{
  const r = await fetch(`${base}/v1/nothing`);
  check(r.status === 404, 'unknown route: 404', `got ${r.status}`);
  const g = await fetch(`${base}/v1/completions`);
  check(g.status === 404 || g.status === 405, 'GET on a POST route: 4xx', `got ${g.status}`);
}
await healthyAnswer('after the malformed requests');

// Slow loris: a client that trickles its headers one byte at a time; others are served meanwhile.
{
  const socket = net.connect(Number(port), hostname);
  await new Promise(r => socket.once('connect', r));
  socket.on('error', () => {});
  const head = 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Slow: ';
  let i = 0;
  const timer = setInterval(() => { if (!socket.destroyed) socket.write(i < head.length ? head[i++] : 'a'); }, 200);
  const t0 = Date.now();
  await Promise.all([0, 1, 2, 3, 4].map(() => healthyAnswer('during a slow-loris client')));
  check(Date.now() - t0 < 30000, 'answers during the slow-loris client came promptly', `${Date.now() - t0} ms`);
  clearInterval(timer);
  socket.destroy();
}
// Many connections that send nothing at all.
{
  const idle = [];
  for (let k = 0; k < 20; k++) {
    const s = net.connect(Number(port), hostname);
    s.on('error', () => {});
    idle.push(s);
  }
  await healthyAnswer('with 20 idle connections open');
  for (const s of idle) s.destroy();
}
// A streaming client that disconnects mid-answer: its sequence is cancelled, the server goes on.
{
  const ctl = new AbortController();
  const res = await fetch(`${base}/v1/completions`, {method: 'POST', signal: ctl.signal,
    body: JSON.stringify({prompt: '1+', max_tokens: 400, temperature: 0, ignore_eos: true, stream: true})});
  const reader = res.body.getReader();
  await reader.read();
  ctl.abort();
  let running = 1;
  for (let k = 0; k < 100 && running > 0; k++) {
    await new Promise(r => setTimeout(r, 100));
    const m = await (await fetch(`${base}/metrics`)).text();
    running = Number((m.match(/^moerun_requests_running (\S+)$/m) || [0, 1])[1]);
  }
  check(running === 0, 'a disconnected stream is cancelled (running back to 0)', `running ${running}`);
}
await healthyAnswer('at the end');
check((await fetch(`${base}/health`)).status === 200, '/health 200 at the end');

console.log(`malformed_test: ${passes} checks passed, ${failures} failed`);
process.exit(failures > 0 ? 1 : 0);
