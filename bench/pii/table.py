#!/usr/bin/env python3
"""Prints the bench/pii comparison as a markdown table.

Usage: table.py PRESIDIO.json BASTION.json
"""
import json
import sys

from score import ENTITIES


def main():
    pres = json.load(open(sys.argv[1]))
    bast = json.load(open(sys.argv[2]))
    p0, p5 = pres["thresholds"]["0.0"], pres["thresholds"]["0.5"]
    b = bast["thresholds"]["0.0"]
    print(f"corpus: {bast['records']} records, {bast['bytes']} bytes")
    print()
    print("| entity | gold | Presidio P / R / F1 (score ≥ 0.0) | Presidio F1 (score ≥ 0.5) | Bastion P / R / F1 |")
    print("|---|---:|---|---:|---|")
    for e in ENTITIES:
        gold = b[e]["tp"] + b[e]["fn"]
        fmt = lambda c: f"{c['p']:.3f} / {c['r']:.3f} / **{c['f1']:.3f}**"  # noqa: E731
        print(f"| {e} | {gold} | {fmt(p0[e])} | {p5[e]['f1']:.3f} | {fmt(b[e])} |")
    print()
    print("| throughput (1 thread) | Presidio MB/s | Bastion MB/s | ratio |")
    print("|---|---:|---:|---:|")
    rows = [("record by record", "mb_per_s"), ("64-record documents", "mb_per_s_joined")]
    if pres.get("mb_per_s_prose") and bast.get("mb_per_s_prose"):
        rows.append(("prose paragraphs (speed-only corpus)", "mb_per_s_prose"))
    for label, key in rows:
        print(f"| {label} | {pres[key]:.3f} | {bast[key]:.1f} | {bast[key] / pres[key]:.0f}× |")


if __name__ == "__main__":
    main()
