// KV cache blocks and prefix caching through the API: a prompt sent again (and prompts sharing its
// long prefix) hit the prefix cache — moerun_prefix_cache_hits_total grows — and get the same
// greedy answers (with logprobs bitwise equal: run the server with --deterministic); the block
// gauges are sane and return to no running use when idle. Usage: node kv_test.mjs BASE_URL
import OpenAI from 'openai';

const base = process.argv[2];
const client = new OpenAI({baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0});
let failures = 0, passes = 0;
function check(cond, what, detail = '') {
  if (cond) { passes++; } else { failures++; console.error(`FAIL: ${what} ${detail}`); }
}
async function metric(name) {
  const m = await (await fetch(`${base}/metrics`)).text();
  const hit = m.match(new RegExp(`^${name} (\\S+)$`, 'm'));
  return hit ? Number(hit[1]) : NaN;
}
const context = Array.from({length: 24}, (_, i) => `${i * 7 + 3}+${i * 5 + 11}=${i * 12 + 14}`).join('\n') + '\n';
const ask = async p => (await client.completions.create({model: 'default', prompt: p, max_tokens: 8, temperature: 0,
                                                          logprobs: 2})).choices[0];
const h0 = await metric('moerun_prefix_cache_hits_total');
const cold = await ask(context + '12+7=');
const h1 = await metric('moerun_prefix_cache_hits_total');
const warm = await ask(context + '12+7=');
const h2 = await metric('moerun_prefix_cache_hits_total');
check(h2 > h1, 'the same prompt again hits the prefix cache', `${h0} -> ${h1} -> ${h2}`);
check(warm.text === cold.text, 'a prefix-cache hit gives the same answer', `${JSON.stringify(warm.text)} vs ${JSON.stringify(cold.text)}`);
check(JSON.stringify(warm.logprobs) === JSON.stringify(cold.logprobs), 'a prefix-cache hit gives the same logprobs');
const other = await ask(context + '40+41=');
const h3 = await metric('moerun_prefix_cache_hits_total');
check(h3 > h2, 'a prompt sharing the prefix hits too', `${h2} -> ${h3}`);
const other2 = await ask(context + '40+41=');
check(JSON.stringify(other2) === JSON.stringify(other), 'the shared-prefix prompt answers the same again');
const total = await metric('moerun_kv_cache_blocks_total'), used = await metric('moerun_kv_cache_blocks_used');
check(total > 0 && used >= 0 && used <= total, 'KV block gauges', `used ${used} of ${total}`);
check(await metric('moerun_prefix_cache_queries_total') >= 3 * 100, 'prefix queries counted in prompt tokens');
console.log(`kv_test: ${passes} checks passed, ${failures} failed`);
process.exit(failures > 0 ? 1 : 0);
