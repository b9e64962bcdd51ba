#!/usr/bin/env python3
"""Writes one marked section of a Markdown file (BENCHMARKS.md) and echoes it.

The section is read from stdin and must start with `<!-- NAME:begin -->` and end with
`<!-- NAME:end -->`. It replaces the file's section of that name, or is appended when the file has
none; a missing file starts as "# Benchmarks". The rest of the file is kept as it is (so
scripts/bench.sh, scripts/bench_moe.sh and scripts/bench_serve.sh each own their section).

Usage: write_section.py NAME FILE < section.md
"""
import os
import re
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: write_section.py NAME FILE < section.md", file=sys.stderr)
        return 2
    name, path = sys.argv[1:]
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    section = sys.stdin.read().strip("\n") + "\n"
    if not (section.startswith(begin) and section.rstrip("\n").endswith(end)):
        print(f"write_section.py: the section on stdin must start with {begin} and end with {end}",
              file=sys.stderr)
        return 2
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    pattern = re.escape(begin) + r".*?" + re.escape(end) + r"\n?"
    if re.search(pattern, text, flags=re.S):
        # A function as the replacement, so backslashes in the section stay as written.
        text = re.sub(pattern, lambda _: section, text, count=1, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)
    sys.stdout.write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
