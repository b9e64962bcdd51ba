#!/usr/bin/env node
// Greedy reference decoding with the real llama.cpp (node-llama-cpp, CPU backend).
//
// Usage:
//   node llama_greedy.mjs MODEL.gguf --tokens 1,2,3 [--tokens ...] [-n 8] [--threads 2] [--logits]
//   node llama_greedy.mjs MODEL.gguf --text "some text" [--text ...] [--special]
//   options: --ctx N (context size; default: longest prompt + n, at least 64), -v (echo llama.cpp's log),
//            --kv-type f32|f16|q8_0 (KV cache type; default llama.cpp's f16. f32 for tight logit checks)
//
// --tokens: the prompt as token ids, fed as they are (llama.cpp adds no BOS here). Each prompt
//   is decoded greedily (temperature 0 = llama.cpp's greedy sampler, i.e. argmax with the lowest
//   id winning ties; no repetition penalty, no top-k/p) for exactly n tokens, not stopping at EOS.
//   Prints one JSON line per prompt: {"prompt":[...],"tokens":[...]}; with --logits the line also
//   has "top5":[[id, logit], ...] for the first generated position (raw logits, best first).
//   The prompt is one batch (batch size = longest prompt), the KV cache is cleared between prompts.
// --text: tokenizes with llama.cpp's tokenizer (no BOS/EOS added; --special lets text like
//   <｜begin▁of▁sentence｜> map to special tokens) and prints {"text":...,"ids":[...]} per text.
// Exit: 0 on success; 1 if llama.cpp rejects the model (its error lines go to stderr) or on bad use.
import {die, loadLlama, loadModel} from "./peer.mjs";

function parseArgs(argv) {
    const a = {model: null, prompts: [], texts: [], n: 8, threads: 2, logits: false, special: false, ctx: 0, kvType: null, verbose: false};
    for (let i = 0; i < argv.length; i++) {
        const arg = argv[i];
        const next = () => {
            if (i + 1 >= argv.length) die(`${arg} needs a value`);
            return argv[++i];
        };
        const int = (v) => {
            if (!/^\d+$/.test(v)) die(`${arg}: not a non-negative integer: ${v}`);
            return Number(v);
        };
        if (arg === "--tokens") {
            const v = next().trim();
            const ids = v === "" ? [] : v.split(",").map((s) => int(s.trim()));
            if (ids.length === 0) die("--tokens: empty prompt");
            a.prompts.push(ids);
        } else if (arg === "--text") a.texts.push(next());
        else if (arg === "-n" || arg === "--n-predict") a.n = int(next());
        else if (arg === "--threads" || arg === "-t") a.threads = int(next());
        else if (arg === "--ctx") a.ctx = int(next());
        else if (arg === "--kv-type") a.kvType = next().toUpperCase();
        else if (arg === "--logits") a.logits = true;
        else if (arg === "--special") a.special = true;
        else if (arg === "-v" || arg === "--verbose") a.verbose = true;
        else if (arg === "-h" || arg === "--help") {
            process.stdout.write("usage: node llama_greedy.mjs MODEL.gguf (--tokens 1,2,3 ... [-n 8] [--threads 2] [--logits] | --text STR ... [--special]) [--ctx N] [--kv-type f32] [-v]\n");
            process.exit(0);
        } else if (arg.startsWith("-")) die(`unknown option ${arg}`);
        else if (a.model === null) a.model = arg;
        else die(`unexpected argument ${arg}`);
    }
    if (a.model === null) die("no model given");
    if (a.prompts.length === 0 && a.texts.length === 0) die("give --tokens and/or --text");
    if (a.threads < 1) die("--threads must be >= 1");
    return a;
}

const args = parseArgs(process.argv.slice(2));
const {llama, logs} = await loadLlama({verbose: args.verbose, maxThreads: args.threads});
const model = await loadModel(llama, logs, args.model, {useMmap: true});

for (const text of args.texts) {
    const ids = Array.from(model.tokenize(text, args.special));
    process.stdout.write(JSON.stringify({text, ids}) + "\n");
}

if (args.prompts.length > 0) {
    const embd = model.fileInfo.tensorInfo?.find((t) => t.name === "token_embd.weight");
    const nVocab = embd ? Number(embd.dimensions[1]) : null;
    for (const p of args.prompts) {
        const bad = p.find((t) => nVocab !== null && t >= nVocab);
        if (bad !== undefined) die(`token id ${bad} is out of range (n_vocab = ${nVocab})`);
    }
    const longest = Math.max(...args.prompts.map((p) => p.length));
    const contextSize = args.ctx || Math.max(64, longest + args.n + 1);
    let context;
    try {
        context = await model.createContext({
            contextSize,
            batchSize: Math.max(longest, 1),
            sequences: 1,
            threads: {ideal: args.threads, min: args.threads},
            flashAttention: false,
            ...(args.kvType ? {experimentalKvCacheKeyType: args.kvType, experimentalKvCacheValueType: args.kvType} : {}),
            ignoreMemorySafetyChecks: true,
        });
    } catch (err) {
        die(`llama.cpp could not create a context: ${err?.message ?? err}`);
    }
    const seq = context.getSequence();
    const greedy = {temperature: 0};
    for (const prompt of args.prompts) {
        await seq.clearHistory();
        const out = [];
        let top5;
        if (args.n > 0) {
            const first = {token: true, options: greedy};
            if (args.logits) first.logits = {filter: {tokens: [], includeTop: 5}};
            const input = prompt.slice(0, -1).concat([[prompt[prompt.length - 1], {generateNext: first}]]);
            const res = await seq.controlledEvaluate(input);
            const next = res[prompt.length - 1]?.next;
            if (next?.token == null) die("llama.cpp returned no token for the prompt");
            out.push(next.token);
            if (args.logits) top5 = [...next.logits.entries()].slice(0, 5).map(([id, v]) => [id, v]);
            while (out.length < args.n) {
                const r = await seq.controlledEvaluate([[out[out.length - 1], {generateNext: {token: true, options: greedy}}]]);
                const tok = r[0]?.next?.token;
                if (tok == null) die("llama.cpp returned no token");
                out.push(tok);
            }
        } else if (args.logits) {
            die("--logits needs -n >= 1");
        }
        const line = {prompt, tokens: out};
        if (args.logits) line.top5 = top5;
        process.stdout.write(JSON.stringify(line) + "\n");
    }
    await context.dispose();
}
await model.dispose();
await llama.dispose();
