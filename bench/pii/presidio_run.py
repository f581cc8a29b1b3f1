#!/usr/bin/env python3
"""Runs presidio-analyzer (pattern recognizers only, offline) over a bench/pii corpus.

Engine: AnalyzerEngine(nlp_engine=NoOpNlpEngine(models=[en/no_op]), supported_languages=["en"]), i.e. the
predefined pattern recognizers without a spaCy model; analyze(text, language="en",
entities=<the six scored entities>) with no context words. Scored at each threshold in
THRESHOLDS (a result counts when its score >= threshold). Time is the sum of the analyze()
calls only (perf_counter), one thread; MB/s uses the UTF-8 size of the texts (10^6 bytes),
(a) record by record, (b) once over documents of JOIN records joined by newlines.

Usage: presidio_run.py CORPUS.jsonl OUT.json [PROSE.jsonl]

With PROSE.jsonl, also the record-by-record speed on that speed-only corpus.
"""
import json
import os
import sys
import tempfile
import time

# Before importing presidio: tldextract would otherwise fetch the public suffix list.
os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""
os.environ.setdefault("TLDEXTRACT_CACHE", os.path.join(tempfile.gettempdir(), "bastion-tldextract"))

from presidio_analyzer import AnalyzerEngine  # noqa: E402
from presidio_analyzer.nlp_engine import NoOpNlpEngine  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from score import ENTITIES, score  # noqa: E402

THRESHOLDS = [0.0, 0.3, 0.5]
JOIN = 64  # records per document in the joined pass (same as examples/pii_bench.rs)


def main():
    corpus, out = sys.argv[1], sys.argv[2]
    records = [json.loads(line) for line in open(corpus, encoding="utf-8")]
    nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "no_op"}])
    nlp.load()
    engine = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
    engine.analyze(text="warm up jane@example.com 4111 1111 1111 1111", language="en", entities=ENTITIES)
    results = []
    elapsed = 0.0
    for rec in records:
        t0 = time.perf_counter()
        res = engine.analyze(text=rec["text"], language="en", entities=ENTITIES)
        elapsed += time.perf_counter() - t0
        results.append([{"entity": r.entity_type, "start": r.start, "end": r.end, "score": r.score} for r in res])
    nbytes = sum(len(r["text"].encode("utf-8")) for r in records)
    docs = ["\n".join(r["text"] for r in records[i:i + JOIN]) for i in range(0, len(records), JOIN)]
    joined_bytes = sum(len(d.encode("utf-8")) for d in docs)
    t0 = time.perf_counter()
    for d in docs:
        engine.analyze(text=d, language="en", entities=ENTITIES)
    joined_elapsed = time.perf_counter() - t0
    prose_mb_s = None
    if len(sys.argv) > 3:
        prose = [json.loads(line)["text"] for line in open(sys.argv[3], encoding="utf-8")]
        t0 = time.perf_counter()
        for t in prose:
            engine.analyze(text=t, language="en", entities=ENTITIES)
        prose_mb_s = sum(len(t.encode("utf-8")) for t in prose) / (time.perf_counter() - t0) / 1e6
    gold = [r["spans"] for r in records]
    by_threshold = {
        str(t): score(gold, [[p for p in ps if p["score"] >= t] for ps in results]) for t in THRESHOLDS
    }
    json.dump({
        "tool": "presidio-analyzer 2.2.366 (NoOpNlpEngine, pattern recognizers)",
        "records": len(records), "bytes": nbytes, "seconds": elapsed,
        "mb_per_s": nbytes / elapsed / 1e6, "mb_per_s_joined": joined_bytes / joined_elapsed / 1e6,
        "mb_per_s_prose": prose_mb_s, "thresholds": by_threshold,
    }, open(out, "w"), indent=1)


if __name__ == "__main__":
    main()
