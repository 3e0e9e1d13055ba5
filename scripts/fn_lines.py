#!/usr/bin/env python3
"""Functions outside tests longer than LIMIT raw lines (signature to closing brace), longest first.

Usage: python3 scripts/fn_lines.py [LIMIT] [DIR...]   (defaults: 100; src crates benches)
Exits 1 if any function is over LIMIT.

Why beside clippy: clippy's too_many_lines (clippy.toml, enforced by .ci/run) counts code lines
only, so a function with long comments passes clippy and may still run over 100 raw lines.

How: rustfmt puts a function's closing brace at the `fn` line's indentation, so the body ends at
the first later line that is exactly that indentation plus "}". Test code is skipped: tests/
folders, files named tests.rs or *_tests.rs, and `#[cfg(test)] mod x { ... }` blocks.
"""
import os, re, sys

FN = re.compile(r'^(\s*)(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+"[^"]*"\s+)?fn\s+(\w+)')
MOD = re.compile(r'^(\s*)(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{')

def scan(path, limit):
    lines = open(path, encoding='utf-8').read().split('\n')
    out = []
    i = 0
    test_end = -1
    pending_cfg_test = False
    while i < len(lines):
        line = lines[i]
        if i <= test_end:
            i += 1; continue
        s = line.strip()
        if s.startswith('#[cfg(test)]') or s.startswith('#[cfg(all(test'):
            pending_cfg_test = True; i += 1; continue
        m = MOD.match(line)
        if m and pending_cfg_test:
            indent = m.group(1)
            j = i + 1
            while j < len(lines) and lines[j] != indent + '}':
                j += 1
            test_end = j; pending_cfg_test = False; i = j + 1; continue
        if s and not s.startswith('#['):
            pending_cfg_test = False
        m = FN.match(line)
        if m:
            indent, name = m.group(1), m.group(8)
            # A declaration without a body ends with ';' before any '{'.
            j = i
            while j < len(lines) and '{' not in lines[j] and not lines[j].rstrip().endswith(';'):
                j += 1
            if j < len(lines) and '{' not in lines[j]:
                i += 1; continue
            if lines[j].rstrip().endswith('}') and lines[j].count('{') == lines[j].count('}'):
                n = j - i + 1  # one-line body
            else:
                k = j + 1
                while k < len(lines) and lines[k] != indent + '}':
                    k += 1
                n = k - i + 1
            if n > limit:
                out.append((n, f'{path}:{i+1}', name))
        i += 1
    return out

def main():
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    roots = sys.argv[2:] or ['src', 'crates', 'benches']
    found = []
    for root in roots:
        for d, dirs, files in os.walk(root):
            dirs[:] = [x for x in dirs if x not in ('target', '.git', 'tests')]
            for f in files:
                if f.endswith('.rs') and f != 'tests.rs' and not f.endswith('_tests.rs'):
                    found += scan(os.path.join(d, f), limit)
    for n, where, name in sorted(found, reverse=True):
        print(f'{n:5} {where} {name}')
    return 1 if found else 0

sys.exit(main())
