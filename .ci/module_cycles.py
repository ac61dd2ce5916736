#!/usr/bin/env python3
"""Fails when the crate's top-level modules import each other in a cycle.

Every `crate::NAME` path counts, wherever it appears (`use` lines, inline
paths such as `crate::error::error_chain(..)`, grouped `use crate::{a, b}`),
and so does `super::NAME` from a file one level down. Comments are skipped.
A module's own submodules (src/token/*.rs) belong to it; `#[cfg(test)]`
code counts too — a test that reaches across modules is still a dependency.
Usage: python3 .ci/module_cycles.py [--known a,b ...] [src]
`--known a,b`: a cycle among exactly these modules is reported but does not
fail (one already on record, to be taken apart); any other cycle fails.
"""
import os
import re
import sys

args = sys.argv[1:]
known = []
while args and args[0] == "--known":
    known.append(sorted(args[1].split(",")))
    args = args[2:]
src = args[0] if args else "src"
modules = sorted(
    name[:-3] if name.endswith(".rs") else name
    for name in os.listdir(src)
    if (name.endswith(".rs") and name not in ("lib.rs", "main.rs"))
    or os.path.isdir(os.path.join(src, name))
)

def top_module(path):
    rel = os.path.relpath(path, src).split(os.sep)
    head = rel[0]
    return head[:-3] if head.endswith(".rs") else head

def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)

def strip_strings(text):
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)

def file_module_path(path):
    """src/a.rs and src/a/mod.rs are [a]; src/a/b.rs is [a, b]."""
    parts = os.path.relpath(path, src).split(os.sep)
    parts[-1] = parts[-1][:-3]
    if parts[-1] == "mod":
        parts.pop()
    return parts

TOKEN = re.compile(r"\bmod\s+([a-z_][a-z0-9_]*)\s*\{|\{|\}|\b((?:super::)+)([a-z_][a-z0-9_]*)")

def super_targets(text, module_path):
    """Top-level modules named through `super::` paths, with inline `mod x { }`
    nesting taken into account (a test module's `super::` is its file's module)."""
    found, braces = set(), []  # braces: True where an inline module opened
    for m in TOKEN.finditer(text):
        if m.group(1):
            braces.append(True)
        elif m.group(0) == "{":
            braces.append(False)
        elif m.group(0) == "}":
            if braces:
                braces.pop()
        else:
            ups = m.group(2).count("super::")
            inline = sum(braces)
            path = module_path + ["<inline>"] * inline
            base = path[: len(path) - ups] if ups <= len(path) else None
            if base == []:  # the crate root: the next name is a top module
                found.add(m.group(3))
            elif base:
                found.add(base[0])
    return found

graph = {m: set() for m in modules}
for root, _, files in os.walk(src):
    for name in files:
        if not name.endswith(".rs"):
            continue
        path = os.path.join(root, name)
        owner = top_module(path)
        if owner not in graph:
            continue
        text = strip_strings(strip_comments(open(path, encoding="utf-8").read()))
        used = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
        # `use crate::{a, b::c}` groups
        for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
            used.update(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
        used |= super_targets(text, file_module_path(path))
        graph[owner].update(m for m in used if m in graph and m != owner)

# Tarjan's strongly connected components.
index, low, stack, on_stack, sccs, counter = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = counter[0]; counter[0] += 1
    stack.append(v); on_stack.add(v)
    for w in sorted(graph[v]):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        scc = []
        while True:
            w = stack.pop(); on_stack.discard(w); scc.append(w)
            if w == v:
                break
        if len(scc) > 1:
            sccs.append(sorted(scc))
sys.setrecursionlimit(10000)
for v in modules:
    if v not in index:
        visit(v)

def a_cycle(scc):
    """One concrete cycle inside a strongly connected component, for the message."""
    members = set(scc)
    start = scc[0]
    path, seen = [start], {start}
    def walk(v):
        for w in sorted(graph[v] & members):
            if w == start and len(path) > 1:
                return True
            if w not in seen:
                seen.add(w); path.append(w)
                if walk(w):
                    return True
                path.pop()
        return False
    walk(start)
    return " -> ".join(path + [start])

new = [scc for scc in sccs if scc not in known]
for scc in sccs:
    kind = "known import cycle (on record, to be removed)" if scc in known else "import cycle"
    print(f"{kind} between modules: {a_cycle(scc)}  (all of: {', '.join(scc)})")
if new:
    sys.exit(1)
print(f"no new import cycle among {len(modules)} modules")
