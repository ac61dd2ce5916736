#!/usr/bin/env python3
"""Fails when the crate's top-level modules import each other in a cycle.

Every path counts, wherever it appears: `use` lines, inline paths such as
`crate::error::error_chain(..)`, grouped and nested groups
(`use crate::{a::{x, y}, b}`), and `super::` chains (`super::{a, b}` from a
top-level file names the crate root's modules), with inline `mod x { }`
nesting taken into account. The source is lexed, not searched with regular
expressions: comments (nested `/* */` too), string, raw-string, byte and
char literals are skipped, so `"https://x"` or `'"'` cannot hide a path.
A module's own submodules (src/token/*.rs) belong to it; `#[cfg(test)]`
code counts too — a test that reaches across modules is still a dependency.

Usage: python3 .ci/module_cycles.py [--known a,b ...] [src]
       python3 .ci/module_cycles.py --self-test
`--known a,b`: a cycle among exactly these modules is reported but does not
fail (one already on record, to be taken apart); any other cycle fails.
`--self-test` checks the checker on small crates with a cycle written in each
path form above (CI runs it before the real check).
"""
import os
import sys
import tempfile


def tokens(text):
    """Identifiers, `::`, and the punctuation `{ } , ;`; literals and comments dropped."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and (text.startswith('r"', i) or text.startswith("r#", i)) or (
            c == "b" and (text.startswith('br"', i) or text.startswith("br#", i))
        ):
            j = i + (2 if c == "b" else 1)
            hashes = 0
            while j < n and text[j] == "#":
                hashes, j = hashes + 1, j + 1
            if j < n and text[j] == '"':
                end = text.find('"' + "#" * hashes, j + 1)
                i = n if end < 0 else end + 1 + hashes
            else:  # a raw identifier such as r#type
                out.append(text[j:].split(None, 1)[0] if j < n else "")
                i = j
                while i < n and (text[i].isalnum() or text[i] == "_"):
                    i += 1
        elif c == '"' or (c == "b" and text.startswith('b"', i)):
            i += 2 if c == "b" else 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
        elif c == "'" or (c == "b" and text.startswith("b'", i)):
            j = i + (2 if c == "b" else 1)
            # A char literal ('x', '\n', '\u{..}', '"'), else a lifetime ('a).
            if j < n and text[j] == "\\":
                end = text.find("'", j + 2)
                i = n if end < 0 else end + 1
            elif j + 1 < n and text[j + 1] == "'":
                i = j + 2
            else:
                i = j
        elif c.isalpha() or c == "_":
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            out.append(text[i:j])
            i = j
        elif text.startswith("::", i):
            out.append("::")
            i += 2
        elif c in "{},;":
            out.append(c)
            i += 1
        else:
            i += 1
    return out


def first_names(toks, i):
    """The first segment of each path starting at toks[i] (after a `::`):
    an identifier, or each element of a `{ … }` group (nested groups inside
    an element do not matter: only its first segment names a module)."""
    if i >= len(toks):
        return set()
    if toks[i] != "{":
        return {toks[i]} if toks[i] not in ("::", ",", ";", "}") else set()
    names, depth, start = set(), 0, True
    for tok in toks[i:]:
        if tok == "{":
            depth += 1
            if depth == 1:
                start = True
                continue
        elif tok == "}":
            depth -= 1
            if depth == 0:
                break
        elif tok == "," and depth == 1:
            start = True
            continue
        if start and depth == 1 and tok not in ("::",):
            names.add(tok)
        start = False
    return names - {"self", "super", "crate"}


def targets(text, module_path):
    """Top-level modules one file names through `crate::` and `super::` paths."""
    toks, found, braces = tokens(text), set(), []  # braces: True for an inline `mod x {`
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok == "mod" and i + 2 < len(toks) and toks[i + 2] == "{":
            braces.append(True)
            i += 3
            continue
        if tok == "{":
            braces.append(False)
        elif tok == "}":
            if braces:
                braces.pop()
        elif tok == "crate" and i + 1 < len(toks) and toks[i + 1] == "::":
            found |= first_names(toks, i + 2)
        elif tok == "super" and (i == 0 or toks[i - 1] != "::"):
            ups, j = 0, i
            while j + 1 < len(toks) and toks[j] == "super" and toks[j + 1] == "::":
                ups, j = ups + 1, j + 2
            if ups:
                path = module_path + ["<inline>"] * sum(braces)
                base = path[: len(path) - ups] if ups <= len(path) else None
                if base == []:  # the crate root: the next names are top modules
                    found |= first_names(toks, j)
                elif base:
                    found.add(base[0])
            i = max(j, i + 1)
            continue
        i += 1
    return found


def module_graph(src):
    modules = sorted(
        name[:-3] if name.endswith(".rs") else name
        for name in os.listdir(src)
        if (name.endswith(".rs") and name not in ("lib.rs", "main.rs"))
        or os.path.isdir(os.path.join(src, name))
    )
    graph = {m: set() for m in modules}
    for root, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            parts = os.path.relpath(path, src).split(os.sep)
            owner = parts[0][:-3] if parts[0].endswith(".rs") else parts[0]
            if owner not in graph:
                continue
            # src/a.rs and src/a/mod.rs are [a]; src/a/b.rs is [a, b].
            parts[-1] = parts[-1][:-3]
            if parts[-1] == "mod":
                parts.pop()
            text = open(path, encoding="utf-8").read()
            used = targets(text, parts)
            graph[owner].update(m for m in used if m in graph and m != owner)
    return graph


def cycles(graph):
    """Tarjan's strongly connected components of more than one module."""
    index, low, stack, on_stack, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(sorted(scc))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return sccs


def a_cycle(graph, scc):
    """One concrete cycle inside a strongly connected component, for the message."""
    members, start = set(scc), scc[0]
    path, seen = [start], {start}

    def walk(v):
        for w in sorted(graph[v] & members):
            if w == start and len(path) > 1:
                return True
            if w not in seen:
                seen.add(w)
                path.append(w)
                if walk(w):
                    return True
                path.pop()
        return False

    walk(start)
    return " -> ".join(path + [start])


# Each case: files of a tiny crate in which `a` and `b` import each other,
# `a -> b` written in the form named; `b -> a` is always a plain `use`.
SELF_TEST = {
    "use line": "use crate::b::X;",
    "inline path": "fn f() { crate::b::g(); }",
    "group": "use crate::{c, b::X};",
    "nested group": "use crate::{c::{x, y}, b};",
    "super group in a top file": "use super::{c, b};",
    "super from a submodule": None,  # a/inner.rs: use super::super::b::X;
    "after a URL string": 'const U: &str = "https://x"; use crate::b::X;',
    "after a quote char": "const Q: char = '\"'; use crate::b::X;",
    "after a raw string": 'const R: &str = r#"he said "hi" // not a comment"#; use crate::b::X;',
    "after a nested comment": "/* a /* b */ c */ use crate::b::X;",
    "in a test module": "#[cfg(test)] mod tests { use super::super::b::X; }",
}


def self_test():
    failures = []
    for name, a_text in SELF_TEST.items():
        with tempfile.TemporaryDirectory() as src:
            files = {"b.rs": "use crate::a::Y;", "c.rs": "", "lib.rs": ""}
            if a_text is None:
                files["a/mod.rs"] = "mod inner;"
                files["a/inner.rs"] = "use super::super::b::X;"
            else:
                files["a.rs"] = a_text
            for rel, text in files.items():
                path = os.path.join(src, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                open(path, "w", encoding="utf-8").write(text)
            if ["a", "b"] not in cycles(module_graph(src)):
                failures.append(name)
    # And no false cycle: a string or comment naming a module is no import.
    with tempfile.TemporaryDirectory() as src:
        for rel, text in {
            "a.rs": '// crate::b::X\nconst S: &str = "crate::b"; fn f<\'a>(x: &\'a str) {}',
            "b.rs": "use crate::a::Y;",
        }.items():
            open(os.path.join(src, rel), "w", encoding="utf-8").write(text)
        if cycles(module_graph(src)):
            failures.append("no cycle from comments, strings or lifetimes")
    if failures:
        print("module_cycles.py self-test FAILED: " + "; ".join(failures))
        sys.exit(1)
    print(f"module_cycles.py self-test: {len(SELF_TEST) + 1} cases ok")


def main():
    args = sys.argv[1:]
    if args == ["--self-test"]:
        self_test()
        return
    known = []
    while args and args[0] == "--known":
        known.append(sorted(args[1].split(",")))
        args = args[2:]
    src = args[0] if args else "src"
    graph = module_graph(src)
    sccs = cycles(graph)
    new = [scc for scc in sccs if scc not in known]
    for scc in sccs:
        kind = "known import cycle (on record, to be removed)" if scc in known else "import cycle"
        print(f"{kind} between modules: {a_cycle(graph, scc)}  (all of: {', '.join(scc)})")
    if new:
        sys.exit(1)
    print(f"no new import cycle among {len(graph)} modules")


main()
