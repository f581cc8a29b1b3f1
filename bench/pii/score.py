"""Scoring shared by the bench/pii runners: per-entity precision, recall and F1.

A predicted span matches a gold span when both have the same entity and their overlap covers
at least half of the longer of the two (so "(415) 555-2671" and "415) 555-2671" match, but a
phone number found inside a card number does not). Each gold span is matched at most once;
spans are character offsets. The Rust bench (examples/pii_bench.rs) implements the same rule.
"""

ENTITIES = ["CREDIT_CARD", "IBAN_CODE", "US_SSN", "EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS"]


def matches(p, g):
    if p["entity"] != g["entity"]:
        return False
    overlap = min(p["end"], g["end"]) - max(p["start"], g["start"])
    longer = max(p["end"] - p["start"], g["end"] - g["start"])
    return overlap > 0 and 2 * overlap >= longer


def score(records_gold, records_pred):
    """records_*: lists (same order) of span lists. Returns {entity: {tp, fp, fn, p, r, f1}}."""
    counts = {e: {"tp": 0, "fp": 0, "fn": 0} for e in ENTITIES}
    for gold, pred in zip(records_gold, records_pred):
        used = [False] * len(gold)
        for p in pred:
            if p["entity"] not in counts:
                continue
            hit = next((i for i, g in enumerate(gold) if not used[i] and matches(p, g)), None)
            if hit is None:
                counts[p["entity"]]["fp"] += 1
            else:
                used[hit] = True
                counts[p["entity"]]["tp"] += 1
        for i, g in enumerate(gold):
            if not used[i]:
                counts[g["entity"]]["fn"] += 1
    for c in counts.values():
        c["p"] = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
        c["r"] = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
        c["f1"] = 2 * c["p"] * c["r"] / (c["p"] + c["r"]) if c["p"] + c["r"] else 0.0
    return counts
