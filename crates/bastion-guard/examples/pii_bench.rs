//! PII detection benchmark against a `bench/pii` corpus (JSONL with gold spans).
//!
//! ```sh
//! cargo run --release -p bastion-guard --example pii_bench -- CORPUS.jsonl [OUT.json [PROSE.jsonl]]
//! ```
//!
//! Runs [`Detector::detect`] (every kind, secrets included) on each record, maps Bastion's
//! kinds to Presidio's entity names (`Card` → `CREDIT_CARD`, `Iban` → `IBAN_CODE`, `Ssn` →
//! `US_SSN`, `Email` → `EMAIL_ADDRESS`, `Phone` → `PHONE_NUMBER`, `Ipv4`/`Ipv6` →
//! `IP_ADDRESS`; other kinds are not scored), and scores them with the rule of
//! `bench/pii/score.py`: same entity, overlap ≥ half of the longer span, each gold span
//! matched once; offsets in characters. Throughput: one thread, repeated passes over the
//! corpus until 2 s have passed, (a) record by record and (b) over documents of
//! [`JOIN`] records joined by newlines, and (c) record by record over the speed-only prose
//! corpus if given; MB = 10^6 bytes of UTF-8 text.

#![expect(
    clippy::print_stdout,
    clippy::disallowed_methods,
    clippy::unwrap_used,
    reason = "a benchmark binary: prints its report and times itself with Instant"
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bastion_guard::{Detector, EntityKind};
use serde_json::{Value, json};

const ENTITIES: [&str; 6] = [
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "IP_ADDRESS",
];
/// Records per document in the joined-throughput pass.
const JOIN: usize = 64;
/// Least time spent in each throughput pass.
const MEASURE_MIN: Duration = Duration::from_secs(2);

struct Span {
    entity: &'static str,
    start: usize,
    end: usize,
}

fn presidio_name(kind: EntityKind) -> Option<&'static str> {
    Some(match kind {
        EntityKind::Card => "CREDIT_CARD",
        EntityKind::Iban => "IBAN_CODE",
        EntityKind::Ssn => "US_SSN",
        EntityKind::Email => "EMAIL_ADDRESS",
        EntityKind::Phone => "PHONE_NUMBER",
        EntityKind::Ipv4 | EntityKind::Ipv6 => "IP_ADDRESS",
        _ => return None,
    })
}

fn matches(p: &Span, g: &Span) -> bool {
    let overlap = p.end.min(g.end).saturating_sub(p.start.max(g.start));
    let longer = (p.end - p.start).max(g.end - g.start);
    p.entity == g.entity && overlap > 0 && 2 * overlap >= longer
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: pii_bench CORPUS.jsonl [OUT.json [PROSE.jsonl]]");
        std::process::exit(2);
    };
    let corpus = std::fs::read_to_string(path).unwrap();
    let records: Vec<Value> = corpus
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let texts: Vec<&str> = records
        .iter()
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    let gold: Vec<Vec<Span>> = records
        .iter()
        .map(|r| {
            r["spans"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Span {
                    entity: ENTITIES
                        .into_iter()
                        .find(|e| *e == s["entity"].as_str().unwrap())
                        .unwrap(),
                    start: usize::try_from(s["start"].as_u64().unwrap()).unwrap(),
                    end: usize::try_from(s["end"].as_u64().unwrap()).unwrap(),
                })
                .collect()
        })
        .collect();
    let detector = Detector::new().unwrap();

    // Accuracy, record by record.
    let mut counts: BTreeMap<&str, [usize; 3]> = ENTITIES.iter().map(|e| (*e, [0; 3])).collect();
    for (text, gold) in texts.iter().zip(&gold) {
        let pred: Vec<Span> = detector
            .detect(text)
            .into_iter()
            .filter_map(|f| {
                Some(Span {
                    entity: presidio_name(f.kind)?,
                    start: text[..f.start].chars().count(),
                    end: text[..f.end].chars().count(),
                })
            })
            .collect();
        let mut used = vec![false; gold.len()];
        for p in &pred {
            let hit = (0..gold.len()).find(|&i| !used[i] && matches(p, &gold[i]));
            let c = counts.get_mut(p.entity).unwrap();
            match hit {
                Some(i) => {
                    used[i] = true;
                    c[0] += 1;
                }
                None => c[1] += 1,
            }
        }
        for (i, g) in gold.iter().enumerate() {
            if !used[i] {
                counts.get_mut(g.entity).unwrap()[2] += 1;
            }
        }
    }

    let bytes: usize = texts.iter().map(|t| t.len()).sum();
    let docs: Vec<String> = texts.chunks(JOIN).map(|c| c.join("\n")).collect();
    let per_record = throughput(bytes, || {
        for t in &texts {
            std::hint::black_box(detector.detect(t));
        }
    });
    let joined_bytes: usize = docs.iter().map(String::len).sum();
    let joined = throughput(joined_bytes, || {
        for d in &docs {
            std::hint::black_box(detector.detect(d));
        }
    });

    let prose_text = args.get(3).map(|p| std::fs::read_to_string(p).unwrap());
    let prose: Vec<String> = prose_text
        .iter()
        .flat_map(|t| t.lines())
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["text"].as_str().unwrap().to_owned()
        })
        .collect();
    let prose_speed = (!prose.is_empty()).then(|| {
        throughput(prose.iter().map(String::len).sum(), || {
            for t in &prose {
                std::hint::black_box(detector.detect(t));
            }
        })
    });

    let mut per_entity = serde_json::Map::new();
    println!("bastion-guard on {} records, {bytes} bytes", texts.len());
    println!(
        "{:<14} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
        "entity", "tp", "fp", "fn", "P", "R", "F1"
    );
    for (e, [tp, fp, fn_]) in &counts {
        let p = ratio(*tp, tp + fp);
        let r = ratio(*tp, tp + fn_);
        let f1 = if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
        println!("{e:<14} {tp:>6} {fp:>6} {fn_:>6} {p:>6.3} {r:>6.3} {f1:>6.3}");
        per_entity.insert(
            (*e).to_owned(),
            json!({"tp": tp, "fp": fp, "fn": fn_, "p": p, "r": r, "f1": f1}),
        );
    }
    println!(
        "throughput: {per_record:.2} MB/s per record, {joined:.2} MB/s on {JOIN}-record documents"
    );
    if let Some(p) = prose_speed {
        println!("throughput: {p:.2} MB/s per record on the prose corpus");
    }
    if let Some(out) = args.get(2) {
        let report = json!({
            "tool": "bastion-guard Detector::detect (all kinds)",
            "records": texts.len(),
            "bytes": bytes,
            "mb_per_s": per_record,
            "mb_per_s_joined": joined,
            "mb_per_s_prose": prose_speed,
            "thresholds": {"0.0": per_entity},
        });
        std::fs::write(out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// MB/s of `pass` over `bytes`, after one warm-up pass, over at least [`MEASURE_MIN`].
fn throughput(bytes: usize, mut pass: impl FnMut()) -> f64 {
    pass();
    let start = Instant::now();
    let mut passes = 0u32;
    while start.elapsed() < MEASURE_MIN {
        pass();
        passes += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    bytes as f64 * f64::from(passes) / secs / 1e6
}
