// The chat page at / in a real headless Chromium (Debian package) driven by puppeteer-core: type a
// question, send it, and see the streamed answer appear; it must equal the API's greedy answer to
// the same conversation (greedy, 12 ids, EOS ignored).
// Usage: node chat_page_test.mjs BASE_URL CHROMIUM_PATH
import puppeteer from 'puppeteer-core';

const [base, chromium] = process.argv.slice(2);
const question = 'What is 12+7?';
const api = await (await fetch(`${base}/v1/chat/completions`, {method: 'POST', body: JSON.stringify({
  messages: [{role: 'user', content: question}], max_tokens: 12, temperature: 0, ignore_eos: true})})).json();
const want = api.choices[0].message.content;

const browser = await puppeteer.launch({executablePath: chromium, headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage']});
let ok = false, got = '';
try {
  const page = await browser.newPage();
  await page.goto(`${base}/?temperature=0&max_tokens=12&ignore_eos=true`, {waitUntil: 'load', timeout: 60000});
  await page.type('#prompt', question);
  await page.click('#send');
  await page.waitForSelector('.assistant[data-done="true"]', {timeout: 60000});
  got = await page.$eval('.assistant', el => el.textContent);
  const errors = await page.$$('.error');
  ok = errors.length === 0 && got === want && got.length > 0;
} finally {
  await browser.close();
}
if (!ok) {
  console.error(`FAIL: chat page answer ${JSON.stringify(got)} != API answer ${JSON.stringify(want)}`);
  process.exit(1);
}
console.log(`chat_page_test: the page streamed ${JSON.stringify(got)} (= the API's answer)`);
