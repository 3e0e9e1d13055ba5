#!/usr/bin/env python3
"""The shape of src/ in figures: the largest production files and functions, and the layout tree.

Usage: python3 scripts/shape.py [N]     (from the repository root; N = how many, default 5)

Production code only: unit tests (tests.rs, tests/ folders, `#[cfg(test)] mod` blocks) are left
out, as scripts/fn_lines.py leaves them out of the function lengths. Run it at two commits to
compare a reshaping (`git stash`/`git worktree` to get the other one).
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def production_files(root="src"):
    for dirpath, _, files in os.walk(root):
        parts = os.path.relpath(dirpath, root).split(os.sep)
        if "tests" in parts:
            continue
        for f in files:
            if f.endswith(".rs") and f != "tests.rs" and not f.endswith("_tests.rs"):
                yield os.path.join(dirpath, f)


def code_lines(path):
    """Lines outside `#[cfg(test)] mod x { ... }` blocks (rustfmt closes them at column 0)."""
    n, skipping, pending = 0, False, False
    for line in open(path, encoding="utf-8"):
        s = line.rstrip("\n")
        if skipping:
            skipping = s != "}"
            continue
        if s.startswith("#[cfg(test)]"):
            pending = True
            continue
        if pending and s.startswith("mod ") and s.endswith("{"):
            skipping, pending = True, False
            continue
        pending = False
        n += 1
    return n


def tree(root="src"):
    lines = []
    for dirpath, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        rel = os.path.relpath(dirpath, root)
        depth = 0 if rel == "." else rel.count(os.sep) + 1
        if "tests" in rel.split(os.sep):
            continue
        names = sorted(f[:-3] for f in files if f.endswith(".rs") and f != "tests.rs")
        label = "src/" if rel == "." else os.path.basename(dirpath) + "/"
        lines.append("  " * depth + label + " " + " ".join(n for n in names if n != "mod"))
    return lines


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    files = sorted(((code_lines(p), p) for p in production_files()), reverse=True)
    total = sum(c for c, _ in files)
    print(f"production code: {len(files)} files, {total} lines (unit tests left out)")
    print(f"\nthe {n} largest files (lines without unit tests):")
    for c, p in files[:n]:
        print(f"{c:6} {p}")
    out = subprocess.run([sys.executable, os.path.join(HERE, "fn_lines.py"), "0", "src"],
                         capture_output=True, text=True).stdout.splitlines()
    print(f"\nthe {n} largest functions (raw lines, signature to closing brace):")
    for line in out[:n]:
        print(line)
    print("\nthe layout (folders and their files):")
    print("\n".join(tree()))


if __name__ == "__main__":
    main()
