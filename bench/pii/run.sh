#!/usr/bin/env bash
# PII detection, Bastion vs presidio-analyzer, in one run: installs the peer (pinned), writes
# the seeded corpus, runs both on it and prints the comparison table (docs/BENCHMARKS.md,
# "PII detection vs presidio-analyzer"). RECORDS=N changes the corpus size (default 10000).
# Outputs land in bench/pii/out/ (not committed).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/peers/presidio.sh
py=.peers/presidio-venv/bin/python
out=bench/pii/out
mkdir -p "$out"
"$py" bench/pii/gen_corpus.py "$out/corpus.jsonl" --records "${RECORDS:-10000}" --prose "$out/prose.jsonl"
echo "presidio-analyzer ..." >&2
"$py" bench/pii/presidio_run.py "$out/corpus.jsonl" "$out/presidio.json" "$out/prose.jsonl"
echo "bastion-guard (release build) ..." >&2
cargo run --release --quiet -p bastion-guard --example pii_bench -- "$out/corpus.jsonl" "$out/bastion.json" "$out/prose.jsonl" >&2
"$py" bench/pii/table.py "$out/presidio.json" "$out/bastion.json"
