#!/usr/bin/env python3
"""Turns scripts/bench.sh's per-repetition JSON files into BENCHMARKS.md: mean ± sd per engine,
format and test, the moerun/llama.cpp ratio of means, and each engine's fraction of the decode
bound: every timed tg run (either engine) has its own bound, from moerun's read probe just before
and just after it, and an engine's fraction is the mean over its runs of t/s / that bound.
One section per code-path level bench.sh ran (--levels: native, the best path each engine finds
for this CPU, and avx2, both engines restricted to their AVX2 paths); a native-only report has no
section heading."""
import argparse
import datetime
import glob
import json
import os
import re
import statistics
import subprocess


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]


def mean_sd(v):
    if not v:
        return float("nan"), float("nan")
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def thp_mode():
    """The kernel's transparent-huge-page mode, e.g. "madvise" (the bracketed one in sysfs)."""
    try:
        text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return "unknown (no /sys/kernel/mm/transparent_hugepage)"
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else text.strip()


def cpu():
    model, flags = "?", ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                have = set(line.split(":", 1)[1].split())
                wanted = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"]
                flags = " ".join(x for x in wanted if x in have)
    fam = ""
    try:
        fam = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fam = next((l.split(":", 1)[1].strip() for l in fam.splitlines() if l.startswith("CPU family")), "")
    except OSError:
        pass
    return model, fam, flags


# What each --levels entry of scripts/bench.sh runs, as the report's section heading and intro
# (native first). {backend}: the ggml CPU variant llama.cpp's runs loaded at that level.
LEVELS = {
    "native": ("Native level: each engine's best code path for this CPU",
               "moerun's default kernel rows (the best ISA this CPU has) vs llama.cpp's `{backend}` build "
               "(the ggml CPU variant it loads here)."),
    "avx2": ("AVX2 level on this machine",
             "moerun with `--kernel avx2` (every kernel row restricted to AVX2 + FMA + F16C) vs llama.cpp's "
             "`{backend}` build, from a copy of the peer that keeps only the ggml CPU variants an AVX2-only "
             "CPU can load (`scripts/install_llama_cpp_peer.sh --cpu-level avx2`); `cpu:haswell` is the "
             "variant an AMD Zen 3 (AVX2, no AVX-512, no AVX-VNNI) loads. Same files, threads and "
             "alternation, but on this machine's clock, caches and memory bandwidth, not a Zen 3's: a "
             "proxy for an AVX2 machine, not a measurement on one."),
}


def level_tables(a, level):
    """One level's table rows from its result files ({engine}-{level}-{type}-{rep}.json): the t/s
    rows, the decode-bound rows, every timed tg run, and llama.cpp's version and backend."""
    rows, bounds, runs, probes, version, backend = [], [], [], [], "?", "?"
    for t in a.types.split(","):
        ll = {"pp": [], "tg": [], "runs": []}  # runs: (t/s, (probe before, probe after)) per probed tg run
        mo = {"pp": [], "tg": []}
        extra = []
        for f in sorted(glob.glob(os.path.join(a.results, f"llama-{level}-{t}-*.json"))):
            for j in load(f):
                ll["pp"] += j.get("pp_tps", [])
                ll["tg"] += j.get("tg_tps", [])
                ll["runs"] += list(zip(j.get("tg_tps", []), j.get("tg_read_gbs", [])))
                version, backend = j.get("llama_cpp_version", "?"), j.get("backend", "?")
        for f in sorted(glob.glob(os.path.join(a.results, f"moerun-{level}-{t}-*.json"))):
            for j in load(f):
                if "test" in j:
                    mo["pp" if j["test"].startswith("pp") else "tg"].append(j["avg_ts"])
                if "read_gbs" in j:
                    extra.append(j)
        bpt = statistics.mean(e["weight_bytes_per_token"] for e in extra) if extra else 0
        # Every timed tg run in the order it ran (the engines alternate), with its own probes.
        moerun_runs = [(r["ts"], (r["read_before"], r["read_after"])) for e in extra for r in e.get("tg_runs", [])]
        for i in range(max(len(ll["runs"]), len(moerun_runs))):
            for engine, lst in (("llama.cpp", ll["runs"]), ("moerun", moerun_runs)):
                if i < len(lst) and bpt:
                    ts, (before, after) = lst[i]
                    probes += [before, after]
                    bound = (before + after) / 2 * 1e9 / bpt
                    runs.append(f"| {t} | {i + 1} | {engine} | {ts:.2f} | {before:.1f} | {after:.1f} | "
                                f"{bound:.2f} | {100 * ts / bound:.0f}% |")
        for test, n in (("pp", a.p), ("tg", a.n)):
            lm, ls = mean_sd(ll[test])
            mm, ms = mean_sd(mo[test])
            rows.append(f"| {t} | {test}{n} | {lm:.2f} ± {ls:.2f} | {mm:.2f} ± {ms:.2f} | {mm / lm:.2f}x |")
        if extra:
            mo_gbs = statistics.mean(e["read_gbs"] for e in extra)
            mo_frac = statistics.mean(e["tg_fraction"] for e in extra)
            mo_frac_step = statistics.mean(e.get("tg_fraction_median_step", 0) for e in extra)
            if len(ll["runs"]) == len(ll["tg"]) and ll["runs"]:
                ll_gbs = statistics.mean(statistics.mean(r) for _, r in ll["runs"])
                ll_frac = statistics.mean(ts / (statistics.mean(r) * 1e9 / bpt) for ts, r in ll["runs"])
                ll_cells = f"{ll_gbs:.1f} | {100 * ll_frac:.0f}% | {mo_frac / ll_frac:.2f}x"
            else:  # llama.cpp's runs were not probed
                ll_cells = "- | - | -"
            rss = max(e["peak_rss_bytes"] for e in extra)
            fb = extra[0]["file_bytes"]
            kv = extra[0]["kv_bytes"]
            bounds.append(f"| {t} | {fb / 1e9:.2f} | {bpt / 1e9:.3f} | {mo_gbs:.1f} | {100 * mo_frac:.0f}% | "
                          f"{100 * mo_frac_step:.0f}% | {ll_cells} | {rss / 1e9:.2f} | {rss / (fb + kv):.2f} |")
    return {"rows": rows, "bounds": bounds, "runs": runs, "probes": probes, "version": version,
            "backend": backend}


def write_level(f, tables, bound_text):
    """One level's three tables; bound_text explains the decode bound before its table."""
    f.write("| format | test | llama.cpp t/s | moerun t/s | moerun / llama.cpp |\n|---|---|---:|---:|---:|\n")
    f.write("\n".join(tables["rows"]) + "\n\n")
    f.write(bound_text)
    f.write("| format | file GB | weights GB/token | read GB/s (moerun runs) | moerun % of bound | "
            "moerun at its median step | read GB/s (llama.cpp runs) | llama.cpp % of bound | "
            "moerun / llama.cpp at equal bandwidth | moerun peak RSS GB | RSS / (file + KV) |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    f.write("\n".join(tables["bounds"]) + "\n")
    if tables["runs"]:
        f.write("\nEvery timed tg run in the order it ran, with the probes around it:\n\n"
                "| format | repetition | engine | tg t/s | read GB/s before | read GB/s after | bound t/s | "
                "% of bound |\n|---|---:|---|---:|---:|---:|---:|---:|\n")
        f.write("\n".join(tables["runs"]) + "\n")


def bound_text(probes):
    """The decode bound's explanation before the first section's table; probes: every read probe
    (GB/s) of the run, both engines and all levels."""
    spread = (f" (in this run two-thread probes read {min(probes):.1f}-{max(probes):.1f} GB/s)"
              if probes else "")
    return ("Decode bound: bytes of weights read per generated token (moerun's count for this file) "
            "over the read bandwidth of the moment. The host's bandwidth moves within seconds"
            f"{spread}, so every timed tg run of either engine gets its own bound from `moerun "
            "read-bandwidth`'s probe (same thread count) just before and just after it; \"% of bound\" "
            "is the mean over an engine's runs of t/s / its own bound, and \"at equal bandwidth\" is "
            "the ratio of the two fractions: the speed ratio if both engines' t/s were proportional "
            "to the bandwidth. Where they are not (compare t/s and bound run by run in the last "
            "table), the ratio of means above stays the comparison. \"At its median step\" is moerun's "
            "fraction at 1 / the median of each run's step times: the host preempts a vCPU for tens of "
            "ms now and then, and a run's mean counts those steps (llama.cpp's runs give only their "
            "totals).\n\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--types", required=True)
    ap.add_argument("--levels", default="native", help="comma-separated: " + ", ".join(LEVELS))
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("-p", type=int, required=True)
    ap.add_argument("-n", type=int, required=True)
    ap.add_argument("-t", type=int, required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    unknown = [x for x in a.levels.split(",") if x not in LEVELS]
    if unknown:
        ap.error(f"unknown level(s) {', '.join(unknown)} (known: {', '.join(LEVELS)})")
    levels = [x for x in LEVELS if x in a.levels.split(",")]  # native first
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    model, fam, flags = cpu()
    tables = {level: level_tables(a, level) for level in levels}
    first = tables[levels[0]]
    if len(levels) == 1:
        versions = f"llama.cpp {first['version']} ({first['backend']})"
    else:
        versions = f"llama.cpp {first['version']} (CPU backend per section below)"
    # Sections other scripts own (<!-- NAME:begin --> ... <!-- NAME:end -->: scripts/bench_serve.sh's
    # "serving", scripts/bench_moe.sh's "moe-layer") survive, in their order.
    kept = ""
    if os.path.exists(a.out):
        for m in re.finditer(r"<!-- ([a-z-]+):begin -->.*?<!-- \1:end -->", open(a.out).read(), flags=re.S):
            kept += "\n" + m.group(0) + "\n"
    with open(a.out, "w") as f:
        f.write("# Benchmarks: moerun vs llama.cpp\n\n")
        f.write("Written by `scripts/bench.sh` (do not edit by hand). Same GGUF files for both engines: "
                f"DeepSeek-V2-Lite shapes, {a.layers} layers, random weights (`moerun make-model`). "
                f"{a.t} threads, prompt processing of {a.p} tokens (pp) and generation of {a.n} (tg), "
                "engines alternating one repetition at a time. The host is shared: compare ratios "
                "from one run, not absolute numbers across runs.")
        if len(levels) > 1:
            f.write(f" Code-path levels, one section each, every repetition running all of them in "
                    f"turn: {', '.join(levels)}.")
        f.write("\n\n")
        f.write(f"- CPU: {model} (family {fam}); flags: {flags}\n")
        f.write(f"- Transparent huge pages (moerun's packed weights and the probe use them when offered): "
                f"{thp_mode()}\n")
        f.write(f"- Date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC; moerun commit {commit}; {versions}\n\n")
        all_probes = [p for lv in levels for p in tables[lv]["probes"]]
        for i, level in enumerate(levels):
            if len(levels) > 1 or level != "native":  # a native-only report has no heading
                title, intro = LEVELS[level]
                if i > 0:
                    f.write("\n")
                f.write(f"## {title}\n\n{intro.format(backend=tables[level]['backend'])}\n\n")
            write_level(f, tables[level], bound_text(all_probes) if i == 0 else
                        "Decode bound, probes and columns as in the first section.\n\n")
        f.write(kept)


if __name__ == "__main__":
    main()
