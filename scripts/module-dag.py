#!/usr/bin/env python3
"""Checks that the top-level modules of each crate (the libraries and the CLI) form a DAG.

A module's dependencies are the top-level modules it names with `crate::<module>` in
its own files (unit-test modules, `#[cfg(test)] mod tests`, left out). Prints each
crate's module graph with --verbose; exits 1 naming the cycles if any crate has one.

    scripts/module-dag.py [--verbose]
"""
import os
import re
import sys



def module_graph(crate):
    src = os.path.join(crate, "src")
    graph = {}
    for dirpath, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            top = os.path.relpath(path, src).split(os.sep)[0].removesuffix(".rs")
            if top in ("lib", "main"):
                continue
            text = open(path, encoding="utf-8").read()
            cut = text.find("#[cfg(test)]\nmod tests")
            if cut >= 0:
                text = text[:cut]
            graph.setdefault(top, set()).update(re.findall(r"crate::([a-z_][a-z0-9_]*)", text))
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    verbose = "--verbose" in sys.argv
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    crates = ["."] + sorted(
        os.path.join("crates", c) for c in os.listdir("crates") if os.path.isdir(os.path.join("crates", c))
    )
    failed = False
    for crate in crates:
        graph = module_graph(crate)
        if verbose:
            print(f"== {crate}")
            for m in sorted(graph):
                print(f"  {m} -> {', '.join(sorted(graph[m])) or '(nothing)'}")
        for comp in cycles(graph):
            failed = True
            print(f"{crate}: modules import each other in a cycle: {' <-> '.join(comp)}")
    if failed:
        sys.exit(1)
    print(f"module graphs of {len(crates)} crates are acyclic")


if __name__ == "__main__":
    main()
