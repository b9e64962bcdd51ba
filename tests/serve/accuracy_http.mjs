// The held-out accuracy of a task through the HTTP API: every problem sent at once (greedy
// completions, at most 16 ids, concurrency-limited clients), graded as `moerun eval` grades
// (answer text with newlines/tabs as spaces, trimmed, equal to the expected answer). Prints
// "accuracy: 0.957 (574/600)" like eval. Usage: node accuracy_http.mjs BASE_URL TASK.jsonl
import fs from 'node:fs';
import OpenAI from 'openai';

const [base, taskPath] = process.argv.slice(2);
const client = new OpenAI({baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 600000});
const problems = fs.readFileSync(taskPath, 'utf8').split('\n').filter(l => l.trim()).map(l => JSON.parse(l));
let next = 0, correct = 0;
async function worker() {
  while (next < problems.length) {
    const p = problems[next++];
    const r = await client.completions.create({prompt: p.prompt, model: 'default', max_tokens: 16, temperature: 0});
    const answer = r.choices[0].text.replace(/[\n\t]/g, ' ').trim();
    if (answer === p.answer.trim()) correct++;
  }
}
await Promise.all(Array.from({length: 64}, worker));
console.log(`accuracy: ${(correct / problems.length).toFixed(3)} (${correct}/${problems.length})`);
