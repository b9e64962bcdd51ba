// Shared helpers of the llama.cpp peer scripts (llama_greedy.mjs, llama_bench.mjs).
//
// node-llama-cpp is imported by absolute path from the peer folder that
// scripts/install_llama_cpp_peer.sh fills ($MOERUN_PEER_DIR, default <repo>/build/llama-peer):
// ES modules do not resolve packages through NODE_PATH.
import fs from "node:fs";
import path from "node:path";
import {fileURLToPath, pathToFileURL} from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const PEER_DIR = process.env.MOERUN_PEER_DIR || path.resolve(HERE, "../../build/llama-peer");

export function die(msg, code = 1) {
    process.stderr.write(`${path.basename(process.argv[1])}: ${msg}\n`);
    process.exit(code);
}

export async function importNodeLlamaCpp() {
    const entry = path.join(PEER_DIR, "node_modules/node-llama-cpp/dist/index.js");
    if (!fs.existsSync(entry))
        die(`node-llama-cpp not found in ${PEER_DIR} (run scripts/install_llama_cpp_peer.sh, or set MOERUN_PEER_DIR)`);
    return import(pathToFileURL(entry).href);
}

// Loads the CPU-only prebuilt llama.cpp (never builds, never downloads). llama.cpp's own log
// lines are kept in `logs` (they hold the real reason when a model is rejected) and echoed to
// stderr when `verbose`.
export async function loadLlama({verbose = false, maxThreads = undefined} = {}) {
    const nlc = await importNodeLlamaCpp();
    const logs = [];
    const llama = await nlc.getLlama({
        gpu: false,
        build: "never",
        usePrebuiltBinaries: true,
        progressLogs: false,
        skipDownload: true,
        ...(maxThreads !== undefined ? {maxThreads} : {}),
        logLevel: nlc.LlamaLogLevel.debug,
        logger(level, message) {
            logs.push({level, message});
            if (verbose) process.stderr.write(`[llama.cpp ${level}] ${message}${message.endsWith("\n") ? "" : "\n"}`);
        },
    });
    return {nlc, llama, logs};
}

// Loads a GGUF; on rejection exits 1 with llama.cpp's own error lines.
export async function loadModel(llama, logs, modelPath, extra = {}) {
    if (!fs.existsSync(modelPath)) die(`no such file: ${modelPath}`);
    try {
        return await llama.loadModel({modelPath, gpuLayers: 0, ...extra});
    } catch (err) {
        const lines = logs
            .filter((l) => l.level === "error" || l.level === "fatal" || /error|failed|exception/i.test(l.message))
            .map((l) => l.message.trimEnd())
            .filter((m, i, all) => m !== "" && all.indexOf(m) === i); // node-llama-cpp loads twice (a dry run first)
        die(`llama.cpp rejected ${modelPath}: ${err?.message ?? err}` + (lines.length ? "\n" + lines.join("\n") : ""));
    }
}

// Which ggml CPU backend variant (libggml-cpu-<variant>.so) the process has loaded.
export function loadedCpuVariant() {
    try {
        const maps = fs.readFileSync("/proc/self/maps", "utf8");
        const libs = new Set();
        for (const m of maps.matchAll(/libggml-cpu-([\w.-]+?)\.so/g)) libs.add(m[1]);
        return [...libs].join(",") || null;
    } catch {
        return null;
    }
}

export function peerVersions() {
    const read = (p) => {
        try {
            return JSON.parse(fs.readFileSync(path.join(PEER_DIR, "node_modules", p), "utf8"));
        } catch {
            return null;
        }
    };
    return {
        node_llama_cpp: read("node-llama-cpp/package.json")?.version ?? null,
        bins: read("@node-llama-cpp/linux-x64/package.json")?.version ?? null,
        build_metadata: read("@node-llama-cpp/linux-x64/bins/linux-x64/_nlcBuildMetadata.json")?.buildOptions?.llamaCpp ?? null,
    };
}
