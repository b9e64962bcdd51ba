// The chat page served at GET / by `moerun serve`: one static HTML file with plain JavaScript (no
// build step) that keeps a conversation and streams each answer from /v1/chat/completions
// (Server-Sent Events read from the fetch body). Element ids (#prompt, #send, #log, .assistant)
// are what tests/serve/chat_page_test.sh drives with a headless browser.
#pragma once

namespace moerun {

inline constexpr const char* kChatPageHtml = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>moerun chat</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 48rem; margin: 2rem auto; padding: 0 1rem; }
  #log div { white-space: pre-wrap; margin: .5rem 0; padding: .5rem; border-radius: .4rem; }
  .user { background: #e8f0fe; } .assistant { background: #f1f3f4; } .error { color: #b00020; }
  form { display: flex; gap: .5rem; } #prompt { flex: 1; padding: .5rem; }
</style>
</head>
<body>
<h1>moerun chat</h1>
<div id="log"></div>
<form id="form"><input id="prompt" autocomplete="off" placeholder="Ask something"><button id="send">Send</button></form>
<script>
const messages = [];
// Request fields from the page's URL, e.g. /?temperature=0&max_tokens=64&ignore_eos=true.
const extra = {};
for (const [k, v] of new URLSearchParams(location.search)) {
  if (['temperature', 'top_p', 'top_k', 'seed', 'max_tokens'].includes(k)) extra[k] = Number(v);
  if (k === 'ignore_eos') extra[k] = v === 'true';
}
const log = document.getElementById('log');
function add(cls, text) {
  const d = document.createElement('div'); d.className = cls; d.textContent = text; log.appendChild(d); return d;
}
document.getElementById('form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = document.getElementById('prompt');
  const text = input.value.trim(); if (!text) return;
  input.value = '';
  messages.push({role: 'user', content: text});
  add('user', text);
  const out = add('assistant', '');
  out.dataset.done = 'false';
  try {
    const res = await fetch('/v1/chat/completions', {method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify(Object.assign({messages, stream: true, max_tokens: 256}, extra))});
    if (!res.ok) { const e = await res.json(); throw new Error(e.error ? e.error.message : res.statusText); }
    const reader = res.body.getReader(); const dec = new TextDecoder(); let buf = '';
    for (;;) {
      const {value, done} = await reader.read(); if (done) break;
      buf += dec.decode(value, {stream: true});
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const line = buf.slice(0, i).trim(); buf = buf.slice(i + 2);
        if (!line.startsWith('data: ')) continue;
        const data = line.slice(6); if (data === '[DONE]') continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        for (const c of chunk.choices) if (c.delta && c.delta.content) out.textContent += c.delta.content;
      }
    }
    messages.push({role: 'assistant', content: out.textContent});
  } catch (e) { add('error', String(e)); }
  out.dataset.done = 'true';
});
</script>
</body>
</html>
)HTML";

}  // namespace moerun
