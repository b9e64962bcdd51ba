// A bounded load test on loopback: C concurrent streaming clients (the openai npm client) send R
// requests in total (greedy arithmetic prompts from a task file), then exit. Every answer must be
// complete (a finish_reason) and equal to the same prompt's answer sent alone. Reports requests/s,
// output tokens/s, p50/p99 time to first token and inter-token latency, as one JSON line (and in
// the file given with --out). Usage: node load_test.mjs BASE_URL TASK.jsonl [--clients 64]
// [--requests 256] [--max-tokens 16] [--out FILE]
import fs from 'node:fs';
import OpenAI from 'openai';

const [base, taskPath] = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const clients = Number(arg('--clients', 64)), total = Number(arg('--requests', 256));
const maxTokens = Number(arg('--max-tokens', 16)), out = arg('--out', '');
const client = new OpenAI({baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 600000});
const model = (await client.models.list()).data[0].id;
const prompts = fs.readFileSync(taskPath, 'utf8').split('\n').filter(l => l.trim()).slice(0, 64)
                  .map(l => JSON.parse(l).prompt);

// Each prompt alone first: the reference answers.
const alone = [];
for (const p of prompts) {
  const r = await client.completions.create({model, prompt: p, max_tokens: maxTokens, temperature: 0});
  alone.push(r.choices[0].text);
}

const ttft = [], itl = [];
let next = 0, outputTokens = 0, failures = 0;
async function worker() {
  while (next < total) {
    const i = next++;
    const prompt = prompts[i % prompts.length];
    const t0 = performance.now();
    let last = null, text = '', finish = null;
    const stream = await client.completions.create({model, prompt, max_tokens: maxTokens, temperature: 0, stream: true,
                                                    stream_options: {include_usage: true}});
    for await (const chunk of stream) {
      if (chunk.usage) outputTokens += chunk.usage.completion_tokens;
      for (const c of chunk.choices) {
        const now = performance.now();
        if (last === null) ttft.push((now - t0) / 1000); else itl.push((now - last) / 1000);
        last = now;
        text += c.text;
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    if (finish === null || text !== alone[i % prompts.length]) {
      failures++;
      console.error(`FAIL: request ${i}: ${JSON.stringify(text)} (${finish}) vs alone ${JSON.stringify(alone[i % prompts.length])}`);
    }
  }
}
const start = performance.now();
await Promise.all(Array.from({length: clients}, worker));
const seconds = (performance.now() - start) / 1000;
const pct = (xs, p) => {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))];
};
const result = {clients, requests: total, seconds: +seconds.toFixed(3), requests_per_s: +(total / seconds).toFixed(2),
                output_tokens_per_s: +(outputTokens / seconds).toFixed(1),
                ttft_p50_ms: +(pct(ttft, 50) * 1000).toFixed(1), ttft_p99_ms: +(pct(ttft, 99) * 1000).toFixed(1),
                itl_p50_ms: +(pct(itl, 50) * 1000).toFixed(2), itl_p99_ms: +(pct(itl, 99) * 1000).toFixed(2),
                mismatches: failures};
console.log(JSON.stringify(result));
if (out) fs.writeFileSync(out, JSON.stringify(result) + '\n');
process.exit(failures > 0 ? 1 : 0);
