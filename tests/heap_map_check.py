#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Runs example_heap_map into a folder and reads every SVG it wrote with a real XML parser (ElementTree): the root is
an svg element in the SVG namespace with numeric width, height and viewBox; every element is SVG; no external
references; each heap map has one region group per region the example counted (a title and one cell rect each, the
runs inside a cell tiling it); the chart has a point per resource and sample.

Usage: heap_map_check.py EXAMPLE_BINARY OUTPUT_DIR
"""
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

SVG = "{http://www.w3.org/2000/svg}"
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


def number(text, what):
    try:
        return float(text)
    except (TypeError, ValueError):
        failures.append(f"{what}: {text!r} is not a number")
        return 0.0


def check_document(path):
    root = ET.parse(path).getroot()
    check(root.tag == SVG + "svg", f"{path}: the root is {root.tag}, not svg in the SVG namespace")
    width = number(root.get("width"), f"{path}: width")
    height = number(root.get("height"), f"{path}: height")
    box = (root.get("viewBox") or "").split()
    check(len(box) == 4, f"{path}: viewBox has {len(box)} numbers")
    box = [number(v, f"{path}: viewBox") for v in box]
    check(width > 0 and height > 0, f"{path}: size {width} x {height}")
    check(box[2:] == [width, height], f"{path}: viewBox {box} does not match the size")
    for e in root.iter():
        check(e.tag.startswith(SVG), f"{path}: element {e.tag} is not SVG")
        for name, value in e.attrib.items():
            check("href" not in name, f"{path}: {e.tag} refers to {value}")
            check("url(" not in value or value.startswith("url(#"), f"{path}: {e.tag} uses {value}")
        if e.tag == SVG + "title":
            check(bool((e.text or "").strip()), f"{path}: an empty title")
    return root


def rect_box(r, path):
    return [number(r.get(k), f"{path}: rect {k}") for k in ("x", "y", "width", "height")]


def check_map(path, regions):
    root = check_document(path)
    groups = [g for g in root.iter(SVG + "g") if g.get("class") == "region"]
    check(len(groups) == regions, f"{path}: {len(groups)} region groups, the example counted {regions}")
    width = number(root.get("width"), "width")
    free_runs = 0
    for g in groups:
        check(len(g) > 0 and g[0].tag == SVG + "title", f"{path}: a region group without its title first")
        cells = [r for r in g.findall(SVG + "rect") if r.get("class") == "cell"]
        check(len(cells) == 1, f"{path}: a region group with {len(cells)} cells")
        if not cells:
            continue
        x, y, w, h = rect_box(cells[0], path)
        check(w > 0 and h > 0 and x >= 0 and x + w <= width, f"{path}: cell {x},{y} {w}x{h} outside the picture")
        runs = [r for r in g.findall(SVG + "rect") if (r.get("class") or "").startswith("run ")]
        edge = x
        for r in runs:
            rx, ry, rw, rh = rect_box(r, path)
            check(abs(rx - edge) <= 0.25 and ry == y and rh == h, f"{path}: a run at {rx} does not follow {edge}")
            edge = rx + rw
            free_runs += r.get("class") == "run free"
        if runs:
            check(abs(edge - (x + w)) <= 0.25, f"{path}: runs end at {edge}, the cell at {x + w}")
    return free_runs


def check_chart(path, samples):
    root = check_document(path)
    lines = root.findall(f".//{SVG}polyline")
    circles = root.findall(f".//{SVG}circle")
    check(len(lines) > 0 and len(lines) % 4 == 0, f"{path}: {len(lines)} lines, not four per resource")
    series = len(lines) // 4
    check(len(circles) == series * samples, f"{path}: {len(circles)} points for {series} x {samples}")
    for line in lines:
        points = line.get("points", "").split()
        check(len(points) == samples, f"{path}: a line of {len(points)} points, not {samples}")
        for p in points:
            for v in p.split(","):
                number(v, f"{path}: a point")


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    example, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        if name.endswith(".svg"):
            os.remove(os.path.join(out, name))
    run = subprocess.run([example, out], capture_output=True, text=True, timeout=240)
    sys.stdout.write(run.stdout)
    sys.stderr.write(run.stderr)
    if run.returncode != 0:
        print(f"heap_map_check: {example} exited with {run.returncode}")
        return 1
    wrote = re.findall(r"^wrote (.+\.svg) (regions|samples)=(\d+)$", run.stdout, re.M)
    check(len(wrote) == 5, f"the example wrote {len(wrote)} pictures, not 5")
    for path, kind, n in wrote:
        check(os.path.isfile(path), f"{path} is missing")
        if kind == "regions":
            free_runs = check_map(path, int(n))
            if "free-list" in path:
                check(free_runs > 0, f"{path}: no free runs in a fragmented free list")
        else:
            check_chart(path, int(n))
    for f in failures:
        print("heap_map_check: FAILED:", f)
    if not failures:
        print(f"heap_map_check: {len(wrote)} pictures parsed and checked")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
