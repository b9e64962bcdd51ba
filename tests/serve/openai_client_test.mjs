// The official `openai` npm client against a running `moerun serve` (tiny-arith model): models,
// completions and chat (whole and streamed, equal text), usage, stop, max_tokens, n, seed,
// logprobs (completions and chat), echo scoring, error objects, tokenize/detokenize, health and
// metrics, and batching: greedy answers alone equal answers among many concurrent requests (with
// --deterministic servers, logprobs bitwise equal too).
// Usage: node openai_client_test.mjs BASE_URL [--deterministic] [--parallel]
import OpenAI from 'openai';

const base = process.argv[2];
const deterministic = process.argv.includes('--deterministic');
const parallel = process.argv.includes('--parallel');  // world > 1: collectives run
const client = new OpenAI({baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120000});
let failures = 0, passes = 0;
function check(cond, what, detail = '') {
  if (cond) { passes++; } else { failures++; console.error(`FAIL: ${what} ${detail}`); }
}
async function expectError(status, what, fn) {
  try { await fn(); check(false, what, '(no error)'); } catch (e) {
    check(e.status === status, what, `status ${e.status}: ${e.message}`);
    check(e.error && typeof e.error.message === 'string' && e.error.message.length > 0, `${what}: message`);
    return e;
  }
}

const models = await client.models.list();
const model = models.data[0].id;
check(models.data.length === 1 && typeof model === 'string', 'models.list');

// Completions, greedy.
const c1 = await client.completions.create({model, prompt: '12+7=', max_tokens: 8, temperature: 0});
check(c1.object === 'text_completion' && c1.choices.length === 1, 'completion shape');
check(c1.choices[0].text === '19', 'completion text', JSON.stringify(c1.choices[0].text));
check(c1.choices[0].finish_reason === 'stop', 'finish_reason stop at EOS', c1.choices[0].finish_reason);
const tok = await (await fetch(`${base}/tokenize`, {method: 'POST', body: JSON.stringify({prompt: '12+7='})})).json();
check(c1.usage.prompt_tokens === tok.count, 'usage.prompt_tokens = /tokenize count', `${c1.usage.prompt_tokens} vs ${tok.count}`);
check(c1.usage.completion_tokens >= 2 && c1.usage.total_tokens === c1.usage.prompt_tokens + c1.usage.completion_tokens, 'usage sums');
const detok = await (await fetch(`${base}/detokenize`, {method: 'POST', body: JSON.stringify({tokens: tok.tokens})})).json();
check(detok.prompt.endsWith('12+7='), 'detokenize(tokenize(x)) ends with x', JSON.stringify(detok));

// Streamed completion: same text, one finish, usage chunk.
let streamed = '', finishes = [], usage = null;
for await (const chunk of await client.completions.create({model, prompt: '12+7=', max_tokens: 8, temperature: 0,
                                                            stream: true, stream_options: {include_usage: true}})) {
  if (chunk.usage) usage = chunk.usage;
  for (const ch of chunk.choices) { streamed += ch.text; if (ch.finish_reason) finishes.push(ch.finish_reason); }
}
check(streamed === c1.choices[0].text, 'stream text = whole text', JSON.stringify(streamed));
check(finishes.length === 1 && finishes[0] === 'stop', 'stream: one finish_reason', JSON.stringify(finishes));
check(usage && usage.completion_tokens === c1.usage.completion_tokens, 'stream usage', JSON.stringify(usage));

// max_tokens: length.
const c2 = await client.completions.create({model, prompt: '123+456=', max_tokens: 1, temperature: 0});
check(c2.choices[0].finish_reason === 'length' && c2.usage.completion_tokens === 1, 'max_tokens 1 -> length');

// Stop strings: free text, then a stop taken from it.
const free = await client.completions.create({model, prompt: '12+7=19\n3+4=7\n9+', max_tokens: 12, temperature: 0,
                                              ignore_eos: true});
const text = free.choices[0].text;
check(text.length >= 4, 'free-running text', JSON.stringify(text));
const stop = text.slice(2, 4);
const cut = await client.completions.create({model, prompt: '12+7=19\n3+4=7\n9+', max_tokens: 12, temperature: 0,
                                             stop: ['never-there', stop], ignore_eos: true});
check(cut.choices[0].text === text.slice(0, text.indexOf(stop)), 'stop: text cut before the stop string',
      `${JSON.stringify(cut.choices[0].text)} vs ${JSON.stringify(text)} stop ${JSON.stringify(stop)}`);
check(cut.choices[0].finish_reason === 'stop', 'stop: finish_reason');
let cutStreamed = '';
for await (const chunk of await client.completions.create({model, prompt: '12+7=19\n3+4=7\n9+', max_tokens: 12,
    temperature: 0, stop: [stop], stream: true, ignore_eos: true})) {
  for (const ch of chunk.choices) cutStreamed += ch.text;
}
check(cutStreamed === cut.choices[0].text, 'stop: streamed text never shows the stop string', JSON.stringify(cutStreamed));

// Chat: whole and streamed agree.
const msgs = [{role: 'user', content: 'What is 2+2?'}];
const chat = await client.chat.completions.create({model, messages: msgs, max_tokens: 12, temperature: 0});
check(chat.object === 'chat.completion' && chat.choices[0].message.role === 'assistant', 'chat shape');
let chatStreamed = '', roles = 0;
for await (const chunk of await client.chat.completions.create({model, messages: msgs, max_tokens: 12, temperature: 0, stream: true})) {
  for (const ch of chunk.choices) { if (ch.delta.role) roles++; chatStreamed += ch.delta.content || ''; }
}
check(chatStreamed === chat.choices[0].message.content, 'chat stream = whole', `${JSON.stringify(chatStreamed)} vs ${JSON.stringify(chat.choices[0].message.content)}`);
check(roles === 1, 'chat stream: role once');
const chatLp = await client.chat.completions.create({model, messages: msgs, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2});
const content = chatLp.choices[0].logprobs.content;
check(content.length === chatLp.usage.completion_tokens && content.every(t => t.logprob <= 0 && t.top_logprobs.length === 2),
      'chat logprobs: one entry per id, 2 alternatives');
check(content.every(t => t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob && t.top_logprobs[0].token === t.token),
      'chat logprobs: greedy id is the best alternative');

// Completion logprobs and echo scoring.
const lp = await client.completions.create({model, prompt: '40+41=', max_tokens: 4, temperature: 0, logprobs: 3});
const L = lp.choices[0].logprobs;
check(L.tokens.length === lp.usage.completion_tokens && L.token_logprobs.every(x => x <= 0), 'logprobs arrays');
check(L.top_logprobs.every(d => Object.keys(d).length <= 3 && Object.keys(d).length >= 1), 'top_logprobs sizes');
check(L.tokens.every((t, i) => Math.max(...Object.values(L.top_logprobs[i])) === L.token_logprobs[i]), 'greedy id has the top logprob');
const echo = await client.completions.create({model, prompt: '40+41=81', max_tokens: 0, echo: true, logprobs: 1});
const E = echo.choices[0].logprobs;
check(echo.choices[0].text === '40+41=81', 'echo text = prompt', JSON.stringify(echo.choices[0].text));
check(E.token_logprobs[0] === null && E.token_logprobs.slice(1).every(x => typeof x === 'number' && x <= 0), 'echo logprobs (first null)');
check(E.tokens.length === echo.usage.prompt_tokens, 'echo: one logprob per prompt token');

// n and seed.
const two = await client.completions.create({model, prompt: '7+8=', max_tokens: 6, temperature: 0, n: 2});
check(two.choices.length === 2 && two.choices[0].text === two.choices[1].text && two.choices[1].index === 1, 'n=2 greedy');
const s1 = await client.completions.create({model, prompt: '7+8=', max_tokens: 6, temperature: 1.0, seed: 42, n: 3});
const s2 = await client.completions.create({model, prompt: '7+8=', max_tokens: 6, temperature: 1.0, seed: 42, n: 3});
check(JSON.stringify(s1.choices.map(c => c.text)) === JSON.stringify(s2.choices.map(c => c.text)), 'seed reproduces');

// Errors: OpenAI error objects with the right status.
await expectError(404, 'unknown model', () => client.completions.create({model: 'nope', prompt: 'x', max_tokens: 1}));
await expectError(400, 'negative max_tokens', () => client.completions.create({model, prompt: 'x', max_tokens: -3}));
await expectError(400, 'max_tokens over the context', () => client.completions.create({model, prompt: 'x', max_tokens: 10 ** 9}));
await expectError(400, 'prompt over the context', () => client.completions.create({model, prompt: Array(5000).fill(5), max_tokens: 1}));
await expectError(400, 'temperature out of range', () => client.completions.create({model, prompt: 'x', temperature: 9}));
await expectError(400, 'wrong type', () => client.completions.create({model, prompt: 'x', max_tokens: 'ten'}));
await expectError(400, 'token id outside the vocabulary', () => client.completions.create({model, prompt: [1, 10 ** 7], max_tokens: 1}));
await expectError(400, 'unsupported penalty', () => client.completions.create({model, prompt: 'x', presence_penalty: 1}));

// Batching: alone vs among many (greedy), prompts of several lengths.
const prompts = ['1+1=', '23+45=', '100+200=', '7*8=', '999+1=', '12+34=', '5*5=', '0+0=', '31+13=', '64+64=',
                 '11*11=', '250+250='];
const opts = p => ({model, prompt: p, max_tokens: 8, temperature: 0, logprobs: deterministic ? 2 : undefined});
const alone = [];
for (const p of prompts) alone.push(await client.completions.create(opts(p)));
const many = await Promise.all([...prompts, ...prompts, ...prompts].map(p => client.completions.create(opts(p))));
for (let i = 0; i < many.length; i++) {
  const a = alone[i % prompts.length].choices[0], b = many[i].choices[0];
  check(a.text === b.text, `batched answer ${i} = alone`, `${JSON.stringify(a.text)} vs ${JSON.stringify(b.text)}`);
  if (deterministic) {
    check(JSON.stringify(a.logprobs) === JSON.stringify(b.logprobs), `deterministic: batched logprobs ${i} bitwise = alone`);
  }
}

// Health and metrics.
check((await fetch(`${base}/health`)).status === 200, '/health 200');
const metrics = await (await fetch(`${base}/metrics`)).text();
for (const name of ['moerun_requests_total', 'moerun_generation_tokens_total', 'moerun_time_to_first_token_seconds_bucket',
                    'moerun_inter_token_latency_seconds_bucket', 'moerun_requests_running', 'moerun_requests_waiting']) {
  check(metrics.includes(name), `/metrics has ${name}`);
}

// MoE series: tokens routed per expert per layer (k per token of each MoE layer).
const routed = [...metrics.matchAll(/^moerun_moe_expert_tokens_total\{expert="(\d+)",layer="(\d+)"\} (\S+)$/gm)];
check(routed.length > 0 && routed.reduce((a, m) => a + Number(m[3]), 0) > 0, 'per-expert routed token counts', `${routed.length} series`);
if (parallel) {
  const coll = [...metrics.matchAll(/^moerun_collective_seconds_total\{op="(\w+)"\} (\S+)$/gm)];
  check(coll.some(m => m[1] === 'broadcast' && Number(m[2]) > 0), 'collective seconds per kind', JSON.stringify(coll.map(m => m[1])));
}

console.log(`openai_client_test: ${passes} checks passed, ${failures} failed`);
process.exit(failures > 0 ? 1 : 0);
