#!/usr/bin/env node
// llama-bench style throughput of the real llama.cpp (node-llama-cpp, CPU backend): the peer
// baseline for moerun's own benchmark.
//
// Usage: node llama_bench.mjs MODEL.gguf [-p 512] [-n 128] [-d 0] [-r 3] [-t 2] [--kv-type f16]
//                              [--no-warmup] [--probe MOERUN] [-v]
//
// Like llama-bench's pp<p> and tg<n> tests, each repetition:
//   pp: clear the KV cache, evaluate p random token ids as ONE batch (batch = ubatch = p);
//   tg: clear the KV cache, evaluate d random token ids untimed (the depth, -d: llama-bench's
//       "tg128 @ d4096"), then n random token ids one at a time; each step computes the logits and
//       lets llama.cpp's greedy sampler pick a token (llama-bench computes the logits and does not
//       sample; argmax over the vocab costs little).
// One untimed warmup of each test first (as llama-bench), unless --no-warmup. Context size is
// max(p, d + n), flash attention off, KV cache f16 (llama.cpp's default), mmap on (llama.cpp's default).
// Differences from llama-bench: the time includes node-llama-cpp's JS batching per call (small
// for pp; per token for tg); pp asks no logits (llama-bench asks only the last one).
// With --probe MOERUN, `MOERUN read-bandwidth -t T -o json` runs just before and just after each
// timed tg, as `moerun bench` probes around its own: "tg_read_gbs": [[before, after], ...] gives
// each run the machine's read bound of its own moment (the host's bandwidth moves within seconds).
// Prints one JSON object: {"pp_tps":[...],"tg_tps":[...], averages, versions, "backend": ...}.
import {execFileSync} from "node:child_process";

import {die, loadLlama, loadModel, loadedCpuVariant, peerVersions} from "./peer.mjs";

function parseArgs(argv) {
    const a = {model: null, p: 512, n: 128, d: 0, r: 3, t: 2, kvType: null, warmup: true, verbose: false, seed: 42,
               probe: null};
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
        if (arg === "-p" || arg === "--n-prompt") a.p = int(next());
        else if (arg === "-n" || arg === "--n-gen") a.n = int(next());
        else if (arg === "-d" || arg === "--n-depth") a.d = int(next());
        else if (arg === "-r" || arg === "--repetitions") a.r = int(next());
        else if (arg === "-t" || arg === "--threads") a.t = int(next());
        else if (arg === "--kv-type") a.kvType = next().toUpperCase();
        else if (arg === "--seed") a.seed = int(next());
        else if (arg === "--no-warmup") a.warmup = false;
        else if (arg === "--probe") a.probe = next();
        else if (arg === "-v" || arg === "--verbose") a.verbose = true;
        else if (arg === "-h" || arg === "--help") {
            process.stdout.write("usage: node llama_bench.mjs MODEL.gguf [-p 512] [-n 128] [-d 0] [-r 3] [-t 2] [--kv-type f16] [--no-warmup] [--seed 42] [--probe MOERUN] [-v]\n");
            process.exit(0);
        } else if (arg.startsWith("-")) die(`unknown option ${arg}`);
        else if (a.model === null) a.model = arg;
        else die(`unexpected argument ${arg}`);
    }
    if (a.model === null) die("no model given");
    if (a.t < 1) die("-t must be >= 1");
    if (a.r < 1) die("-r must be >= 1");
    if (a.p === 0 && a.n === 0) die("nothing to do: -p 0 and -n 0");
    return a;
}

const args = parseArgs(process.argv.slice(2));
const {llama, logs} = await loadLlama({verbose: args.verbose, maxThreads: args.t});
const model = await loadModel(llama, logs, args.model);

const embd = model.fileInfo.tensorInfo?.find((t) => t.name === "token_embd.weight");
const nVocab = embd ? Number(embd.dimensions[1]) : 32000;
let state = args.seed >>> 0;
const randomToken = () => {
    // xorshift32: reproducible ids, never the special ids at the end of small vocabs
    state ^= state << 13; state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5; state >>>= 0;
    return state % Math.max(1, nVocab - 2);
};

let context;
try {
    context = await model.createContext({
        contextSize: Math.max(args.p, args.d + args.n, 32),
        batchSize: Math.max(args.p, Math.min(args.d, 512), 1),
        sequences: 1,
        threads: {ideal: args.t, min: args.t},
        flashAttention: false,
        ...(args.kvType ? {experimentalKvCacheKeyType: args.kvType, experimentalKvCacheValueType: args.kvType} : {}),
        ignoreMemorySafetyChecks: true,
    });
} catch (err) {
    die(`llama.cpp could not create a context: ${err?.message ?? err}`);
}
const seq = context.getSequence();
const now = () => Number(process.hrtime.bigint()) / 1e9;

async function runPP() {
    await seq.clearHistory();
    const tokens = Array.from({length: args.p}, randomToken);
    const t0 = now();
    await seq.evaluateWithoutGeneratingNewTokens(tokens);
    return args.p / (now() - t0);
}

async function runTG(n) {
    await seq.clearHistory();
    if (args.d > 0) await seq.evaluateWithoutGeneratingNewTokens(Array.from({length: args.d}, randomToken));
    const step = {generateNext: {token: true, options: {temperature: 0}}};
    const t0 = now();
    for (let i = 0; i < n; i++) await seq.controlledEvaluate([[randomToken(), step]]);
    return n / (now() - t0);
}

if (args.warmup) {
    if (args.p > 0) await runPP();
    if (args.n > 0) await runTG(1);
}
// The read bandwidth of this moment, GB/s, by moerun's probe with the same thread count.
function probeNow() {
    let out;
    try {
        out = execFileSync(args.probe, ["read-bandwidth", "-t", String(args.t), "-o", "json"], {encoding: "utf8"});
    } catch (err) {
        die(`--probe ${args.probe} failed: ${err?.message ?? err}`);
    }
    const gbs = JSON.parse(out).read_gbs;
    if (typeof gbs !== "number") die(`--probe ${args.probe}: no read_gbs in ${out.trim()}`);
    return gbs;
}

const pp = [];
const tg = [];
const tgRead = [];
for (let rep = 0; rep < args.r; rep++) {
    if (args.p > 0) pp.push(await runPP());
    if (args.n > 0) {
        const before = args.probe ? probeNow() : null;
        tg.push(await runTG(args.n));
        if (args.probe) tgRead.push([before, probeNow()]);
    }
}

const stats = (xs) => {
    if (xs.length === 0) return {avg: null, stddev: null};
    const avg = xs.reduce((s, x) => s + x, 0) / xs.length;
    const sd = xs.length > 1 ? Math.sqrt(xs.reduce((s, x) => s + (x - avg) ** 2, 0) / (xs.length - 1)) : 0;
    return {avg, stddev: sd};
};
const round = (x) => (x === null ? null : Math.round(x * 100) / 100);
const versions = peerVersions();
const result = {
    model: args.model,
    model_type: model.typeDescription,
    n_prompt: args.p,
    n_gen: args.n,
    n_depth: args.d,
    repetitions: args.r,
    threads: context.currentThreads ?? args.t,
    pp_tps: pp.map(round),
    tg_tps: tg.map(round),
    ...(args.probe ? {tg_read_gbs: tgRead} : {}),
    pp_avg: round(stats(pp).avg),
    pp_stddev: round(stats(pp).stddev),
    tg_avg: round(stats(tg).avg),
    tg_stddev: round(stats(tg).stddev),
    llama_cpp_version: `${llama.llamaCppRelease.repo}@${llama.llamaCppRelease.release}`,
    node_llama_cpp_version: versions.node_llama_cpp,
    build_type: llama.buildType,
    backend: `cpu:${loadedCpuVariant() ?? "unknown"}`,
    cpu_features: llama.systemInfo.trim(),
    mmap: model.useMmap,
    flash_attention: context.flashAttention,
    batch_size: context.batchSize,
    context_size: context.contextSize,
    kv_cache_type: args.kvType ?? "F16",
};
process.stdout.write(JSON.stringify(result) + "\n");
await context.dispose();
await model.dispose();
await llama.dispose();
