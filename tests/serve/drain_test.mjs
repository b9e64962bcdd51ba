// SIGTERM while streams run: every client gets either a complete answer (finish_reason set) or an
// error event, and the stream always ends with [DONE]; new requests during the drain get 503.
// Usage: node drain_test.mjs BASE_URL SERVER_PID
const [base, pid] = process.argv.slice(2);
let failures = 0;
function check(cond, what, detail = '') { if (!cond) { failures++; console.error(`FAIL: ${what} ${detail}`); } }

async function stream(maxTokens) {
  const res = await fetch(`${base}/v1/completions`, {method: 'POST', body: JSON.stringify({
    prompt: '1+', max_tokens: maxTokens, temperature: 0, ignore_eos: true, stream: true})});
  const body = await res.text();
  const events = body.split('\n\n').filter(e => e.startsWith('data: ')).map(e => e.slice(6));
  const done = events.length > 0 && events[events.length - 1] === '[DONE]';
  const parsed = events.filter(e => e !== '[DONE]').map(e => JSON.parse(e));
  const finished = parsed.some(p => p.choices && p.choices.some(c => c.finish_reason));
  const errored = parsed.some(p => p.error);
  return {done, finished, errored};
}
const short = stream(4), long = stream(1000);
await new Promise(r => setTimeout(r, 500));
process.kill(Number(pid), 'SIGTERM');
await new Promise(r => setTimeout(r, 200));
const during = await fetch(`${base}/v1/completions`, {method: 'POST', body: JSON.stringify({prompt: 'x', max_tokens: 1})})
                   .then(r => r.status).catch(() => 'closed');
check(during === 503 || during === 'closed', 'a new request during the drain: 503', `got ${during}`);
for (const [name, p] of [['short', short], ['long', long]]) {
  const r = await p;
  check(r.done, `${name} stream ends with [DONE]`);
  check(r.finished || r.errored, `${name} stream: a finish_reason or an error event`, JSON.stringify(r));
}
const s = await short;
check(s.finished && !s.errored, 'the short stream finished normally');
console.log(`drain_test: ${failures} failures`);
process.exit(failures > 0 ? 1 : 0);
