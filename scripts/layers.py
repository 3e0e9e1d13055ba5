#!/usr/bin/env python3
"""The import graph of src/: cycles between files, and arrows that run up the layers.

Usage: python3 scripts/layers.py [--graph]     (from the repository root)
Exits 1 if the graph has a cycle or an arrow that the layer rules below forbid, or if a file
breaks the layout's two conventions: a folder module is `x/mod.rs` (never `x.rs` beside `x/`),
and a module's unit tests are its `mod tests` (inline at the end of the file, or `tests.rs` /
`tests/` in its folder), never a sibling file of another name.

What an arrow is: file A names an item of file B, through `use crate::...`, `use super::...`, a
child module's `use x::...`, or a path written inline (`crate::x::y::f()`). A name re-exported
with `pub use` is followed to the file that defines it, so a facade cannot hide a cycle. A module
declaring its children (`mod x;`) is not an arrow; a parent that uses its child's items is one,
but a file's arrows up to its own parent folder's module are not counted: a folder module is one
module split over files for reading (`impl` blocks in several files, private helpers), and its
children using its types is not a tie between modules. Test code is left out: tests.rs files, tests/ folders and
`#[cfg(test)] mod x { ... }` blocks.

Why a script and not a crate: cargo-modules and friends draw module trees, not file cycles, and
need a nightly or rust-analyzer build that CI would compile from scratch; this reads the source
as text in a second and fails CI with the arrow to remove.
"""
import os
import re
import sys

# The layers, from the top down. A file may import its own layer or any layer below it. Every
# module of src/ must be in exactly one layer (a module missing here is an error, so that a new
# module gets placed on purpose).
LAYERS = [
    ("entry", ["main", "commands", "cli", "demo"]),
    ("wiring", ["app", "backfill", "reload", "audit"]),
    ("puller", ["puller"]),
    ("ha", ["ha"]),
    ("vendor api", ["api"]),
    ("devo", ["devo"]),
    ("state", ["state"]),
    ("config", ["config"]),
    ("output", ["output"]),
    ("pipeline", ["pipeline"]),
    ("observability", ["metrics", "logging"]),
    ("domain", ["event", "service", "trust", "secret", "backoff", "clock", "timestamp", "component", "outcome", "yaml_walker"]),
]

USE = re.compile(r'\buse\s+((?:crate|super|self)(?:::\w+)*(?:::\{[^;]*\})?|\w+(?:::\w+)*(?:::\{[^;]*\})?)\s*;', re.S)
INLINE = re.compile(r'\b((?:crate|super)(?:::\w+)+)')
PUB_USE = re.compile(r'\bpub(?:\([^)]*\))?\s+use\s+([^;]+);', re.S)
MOD_DECL = re.compile(r'^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;', re.M)


def module_files(root="src"):
    """Maps module path (tuple of names, crate root = ()) to its file."""
    mods = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, root)[:-3].split(os.sep)
            if not f.endswith(".rs") or "tests" in rel or f.endswith("_tests.rs"):
                continue  # unit tests: not part of the graph
            if rel in (["lib"], ["main"]):
                key = () if rel == ["lib"] else ("main",)
            elif rel[-1] == "mod":
                key = tuple(rel[:-1])
            else:
                key = tuple(rel)
            mods[key] = path
    return mods


def strip_tests_and_comments(text):
    """The text without comments, string bodies and #[cfg(test)] blocks."""
    text = re.sub(r'//[^\n]*', '', text)
    text = re.sub(r'/\*.*?\*/', '', text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    out, i = [], 0
    for m in re.finditer(r'#\[cfg\((?:all\()?test[^\]]*\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{', text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e] (the `as` renames dropped)."""
    tree = re.sub(r'\s+', '', re.sub(r'\s+as\s+\w+', '', tree))
    if "{" not in tree:
        return [tree]
    head, rest = tree.split("{", 1)
    body = rest[: rest.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    parts.append(cur)
    return [p2 for p in parts if p for p2 in expand(head + p)]


def absolute(path, here, children):
    """A `use` path as module names from the crate root, or None if it is not ours."""
    segs = [s for s in path.split("::") if s and s != "*"]
    if segs[0] == "crate":
        return segs[1:]
    if segs[0] in ("super", "self"):
        base = list(here)
        while segs and segs[0] in ("super", "self"):
            if segs.pop(0) == "super":
                base = base[:-1]
        return base + segs
    if segs[0] in children:
        return list(here) + segs
    return None


class Graph:
    def __init__(self):
        self.mods = module_files()
        self.text = {}
        self.children = {}
        for key, path in self.mods.items():
            t = strip_tests_and_comments(open(path, encoding="utf-8").read())
            self.text[key] = t
            self.children[key] = set(MOD_DECL.findall(t))
        self.reexports = {key: self._reexports(key) for key in self.mods}

    def _reexports(self, key):
        out = {}
        for tree in PUB_USE.findall(self.text[key]):
            for p in expand(tree):
                target = absolute(p, key, self.children[key])
                if target:
                    out[target[-1]] = target
        return out

    def file_of(self, names, seen=None):
        """The module file that defines the item `names` (following `pub use`)."""
        seen = seen or set()
        for n in range(len(names), -1, -1):
            key = tuple(names[:n])
            if key in self.mods:
                rest = names[n:]
                if rest and rest[0] in self.reexports.get(key, {}) and (key, rest[0]) not in seen:
                    seen.add((key, rest[0]))
                    return self.file_of(self.reexports[key][rest[0]] + rest[1:], seen)
                return key
        return None

    def arrows(self):
        edges = {}
        for key in self.mods:
            t = self.text[key]
            paths = [p for tree in USE.findall(t) for p in expand(tree)]
            paths += INLINE.findall(t)
            for p in paths:
                names = absolute(p, key, self.children[key])
                if names is None:
                    continue
                target = self.file_of(names)
                if target is None or target == () or key[: len(target)] == target:
                    continue  # not ours, the crate root, itself, or its own parent
                edges.setdefault(key, set()).add(target)
        return edges


def cycles(edges, nodes):
    """Tarjan's strongly connected components of more than one file."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            visit(v)
    return out


def convention_problems(root="src"):
    out = []
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            if d + ".rs" in files:
                out.append(f"{os.path.join(dirpath, d)}.rs beside {os.path.join(dirpath, d)}/: "
                           f"move it to {os.path.join(dirpath, d)}/mod.rs (one module convention)")
        for f in files:
            if f.endswith("_tests.rs"):
                out.append(f"{os.path.join(dirpath, f)}: unit tests are the module's `mod tests` "
                           "(inline, or tests.rs / tests/ in its folder)")
    return out


def layer_of(key):
    top = key[0] if key else ""
    for i, (_, tops) in enumerate(LAYERS):
        if top in tops:
            return i
    return None


def name(key, g):
    return g.mods[key]


def main():
    g = Graph()
    edges = g.arrows()
    problems = convention_problems()
    for key in sorted(g.mods):
        if key and layer_of(key) is None:
            problems.append(f"{name(key, g)}: module `{key[0]}` is in no layer of scripts/layers.py; place it")
    for comp in cycles(edges, sorted(g.mods)):
        ties = [f"{name(a, g)} -> {name(b, g)}" for a in comp for b in sorted(edges.get(a, ())) if b in comp]
        problems.append("cycle: " + ", ".join(name(k, g) for k in comp) + "\n    " + "\n    ".join(ties))
    for a in sorted(edges):
        for b in sorted(edges[a]):
            la, lb = layer_of(a), layer_of(b)
            if la is not None and lb is not None and lb < la:
                problems.append(f"up: {name(a, g)} ({LAYERS[la][0]}) imports {name(b, g)} ({LAYERS[lb][0]})")
    if "--graph" in sys.argv:
        for a in sorted(edges):
            print(name(a, g), "->", ", ".join(name(b, g) for b in sorted(edges[a])))
    for p in problems:
        print(p)
    print(f"{len(g.mods)} files, {sum(len(v) for v in edges.values())} arrows, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
