#!/usr/bin/env python3
"""Checks that #include edges between the source folders follow the layering
and that no module (a header and its .c file) depends on itself through
others.

    tools/check_layers.py [ROOT]

Each folder may include headers from the folders listed for it in LAYERS
(and its own).  Prints one line per violation and per cycle and exits 1 if
there is any; prints the folder graph and exits 0 otherwise.
"""
import os
import re
import sys

# folder -> folders whose headers it may include (its own always allowed)
LAYERS = {
    "core": [],
    "proto": ["core"],
    "engine": ["core"],
    "cluster": ["core", "proto", "engine"],
    "worker": ["core", "proto", "engine", "cluster"],
    "coordinator/text": ["core"],
    "coordinator/trust": ["core", "engine"],
    "coordinator/dispatch": ["core", "proto", "engine", "cluster"],
    "coordinator/sched": ["core", "engine"],
    "coordinator/cli": ["core", "proto", "engine", "cluster", "worker", "coordinator/text",
                        "coordinator/trust", "coordinator/dispatch", "coordinator/sched",
                        "coordinator/serve"],
    "coordinator/serve": ["core", "engine", "coordinator/text", "coordinator/trust", "coordinator/sched"],
}
GENERATED = {"trustmoe.pb-c.h": "proto"}  # built from proto/trustmoe.proto
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    owner = dict(GENERATED)  # header name -> folder
    files = []               # (folder, path)
    for folder in LAYERS:
        d = os.path.join(root, folder)
        for name in sorted(os.listdir(d)):
            if name.endswith((".c", ".h")):
                files.append((folder, os.path.join(d, name)))
                if name.endswith(".h"):
                    if name in owner:
                        print(f"{folder}/{name}: the same header name is in {owner[name]}/")
                        return 1
                    owner[name] = folder
    bad = 0
    edges = {}  # header -> headers it includes (for cycles)
    folder_edges = set()
    for folder, path in files:
        with open(path, encoding="utf-8") as f:
            incs = INCLUDE.findall(f.read())
        rel = os.path.relpath(path, root)
        for inc in incs:
            dep = owner.get(os.path.basename(inc))
            if dep is None:
                print(f"{rel}: includes \"{inc}\", which is in none of the source folders")
                bad += 1
                continue
            if dep != folder:
                folder_edges.add((folder, dep))
                if dep not in LAYERS[folder]:
                    print(f"{rel}: includes {dep}/{inc}, but {folder}/ may only include "
                          f"{', '.join(LAYERS[folder]) or 'nothing outside itself'}")
                    bad += 1
        # a module is a header and its .c file: x.c and x.h are one node
        mod = os.path.splitext(os.path.basename(path))[0]
        deps = [os.path.splitext(os.path.basename(i))[0] for i in incs]
        edges.setdefault(mod, []).extend(d for d in deps if d != mod)

    # cycles among modules: depth-first search with colours
    colour = {}

    def visit(h, stack):
        nonlocal bad
        colour[h] = 1
        for d in edges.get(h, []):
            if colour.get(d) == 1:
                print("include cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
                bad += 1
            elif d not in colour:
                visit(d, stack + [d])
        colour[h] = 2

    for h in sorted(edges):
        if h not in colour:
            visit(h, [h])
    if bad:
        print(f"{bad} layering problem(s)")
        return 1
    for a, b in sorted(folder_edges):
        print(f"{a} -> {b}")
    print(f"layers ok: {len(files)} files, {len(folder_edges)} folder edges, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
