#!/usr/bin/env python3
"""Import cycles between the enclave's modules (issue 15).

Builds the module graph of enclave/src from `mod`, `use crate::...`,
`use super::...` and inline `crate::x::...` paths. Nodes are the top-level
modules (`api`, `auth`, `keystore`, ...), except that the layered directories
`api` and `keystore` count one node per submodule (`api::aliases`,
`keystore::due`, ...): their files are the units that must not import each
other in a circle. A module's own `mod.rs` counts as the directory's node
(`api`), and a submodule's children fold into it.

Prints every cycle (one strongly connected component per line) and every
module below the request layer that imports `crate::api`; exits 1 on either.
Standard library only:  python3 .ci/check-module-cycles.py [enclave/src]
"""
import os
import re
import sys

EXPANDED = {"api", "keystore"}  # directories whose submodules are nodes
# Modules above the request layer, allowed to import `crate::api`.
ABOVE_API = {"api", "server", "main", "lib"}

PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super)::\{([^;]*)\}\s*;", re.S)


MODULES = {}  # top-level module -> its submodules (filled by `main`)


def node_of(parts):
    """The graph node of a path below the crate: its module, never an item
    (`crate::api::Ctx` is the node `api`, `crate::Enclave` the root `lib`)."""
    if not parts or parts[0] not in MODULES:
        return "lib"
    if parts[0] in EXPANDED and len(parts) > 1 and parts[1] in MODULES[parts[0]]:
        return f"{parts[0]}::{parts[1]}"
    return parts[0]


def module_path(root, path):
    rel = os.path.relpath(path, root)[: -len(".rs")].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel in (["lib"], ["main"]):
        return []
    if rel and rel[-1] == "tests":
        return None  # unit tests may use anything
    return rel


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    # Test modules (`#[cfg(test)] mod tests { ... }` at the end) are not edges.
    cut = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    return text[: cut.start()] if cut else text


def edges_of(mod, text):
    targets = set()

    def add(kind, names):
        if kind == "crate":
            base = []
        else:
            base = list(mod)
            names = list(names)
            while names and names[0] == "super":
                base = base[:-1]
                names = names[1:]
            base = base[:-1]  # `super` of a module is its parent
        full = base + list(names)
        if full and full[0] in ("self",):
            return
        targets.add(node_of(full))

    for child in re.findall(r"\bmod\s+([A-Za-z_][A-Za-z0-9_]*)\s*;", text):
        targets.add(node_of(list(mod) + [child]))
    for kind, body in USE_GROUP.findall(text):
        for item in re.split(r",", re.sub(r"\{[^}]*\}", "", body)):
            item = item.strip()
            if item:
                add(kind, [p for p in item.split(" as ")[0].split("::") if p and p != "self"])
    for kind, rest in PATH.findall(text):
        names = [p for p in rest.split("::") if p]
        if kind == "super":
            # `super::super::x` arrives as rest "::super::x"
            add(kind, names)
        else:
            add(kind, names)
    return targets


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "enclave", "src")
    root = os.path.normpath(root)
    for entry in os.listdir(root):
        name = entry[: -len(".rs")] if entry.endswith(".rs") else entry
        if name in ("lib", "main"):
            continue
        sub = os.path.join(root, entry)
        MODULES[name] = (
            {e[: -len(".rs")] if e.endswith(".rs") else e for e in os.listdir(sub)} - {"mod", "tests"}
            if os.path.isdir(sub)
            else set()
        )
    graph = {}
    for directory, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(directory, name)
            mod = module_path(root, path)
            if mod is None:
                continue
            with open(path, encoding="utf-8") as f:
                text = strip(f.read())
            here = node_of(mod)
            for target in edges_of(mod, text):
                if target != here and target != "lib":
                    graph.setdefault(here, set()).add(target)
            graph.setdefault(here, set())
    nodes = set(graph) | {t for ts in graph.values() for t in ts}
    for n in nodes:
        graph.setdefault(n, set())

    # Tarjan's strongly connected components.
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(sorted(scc))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)

    failed = False
    for scc in sorted(sccs):
        failed = True
        inner = {v: sorted(w for w in graph[v] if w in scc) for v in scc}
        print("cycle: " + ", ".join(scc))
        for v in scc:
            print(f"    {v} -> {', '.join(inner[v])}")
    for v in sorted(nodes):
        top = v.split("::")[0]
        if top in ABOVE_API:
            continue
        bad = sorted(w for w in graph[v] if w.split("::")[0] == "api")
        if bad:
            failed = True
            print(f"layering: {v} imports {', '.join(bad)} (below the request layer)")
    if not failed:
        print(f"no import cycles among {len(nodes)} modules of {root}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
