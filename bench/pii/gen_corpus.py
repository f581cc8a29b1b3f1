#!/usr/bin/env python3
"""Seeded synthetic PII corpus for comparing Bastion's detectors with presidio-analyzer.

Writes JSONL, one record per line:
  {"id": N, "text": "...", "spans": [{"entity": "CREDIT_CARD", "start": s, "end": e}, ...]}
with start/end as character (code point) offsets into text. Entities use Presidio's names:
CREDIT_CARD, IBAN_CODE, US_SSN, EMAIL_ADDRESS, PHONE_NUMBER, IP_ADDRESS.

The templates are this project's own (business chat, support tickets, logs). Values come from
Faker (seeded) except phone numbers, which are built from real area codes so that a "phone
number" in the gold set is one a person could dial. Some templates carry distractors (order
numbers, dates, amounts, versions, Luhn-invalid numbers, hashes) that are *not* gold.

With --prose PROSE.jsonl it also writes a speed-only corpus of Faker lorem paragraphs
(no PII, no gold spans): text with few digits, like most chat.

Usage: gen_corpus.py OUT.jsonl [--records N] [--seed S] [--prose PROSE.jsonl]
"""
import argparse
import json
import random
import re

from faker import Faker

ENTITIES = ["CREDIT_CARD", "IBAN_CODE", "US_SSN", "EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS"]

# {SLOT} is a gold entity; {name}, {company}, ... are filler; {dX} are distractors.
TEMPLATES = [
    "Hi, this is {name} from {company}. Please charge my card {CREDIT_CARD} for invoice {order}.",
    "Card on file: {CREDIT_CARD}, exp {exp}. Billing contact {EMAIL_ADDRESS}.",
    "Customer {name} paid {amount} with card {CREDIT_CARD} on {date}; reference {order}.",
    "Please wire the deposit of {amount} to IBAN {IBAN_CODE} before {date}.",
    "Our bank details changed: {IBAN_CODE} ({company}). Old account closed on {date}.",
    "Refund {amount} to {IBAN_CODE}, attn. {name}, ticket #{ticket}.",
    "My SSN is {US_SSN} and my date of birth is {date}.",
    "Employee {name}, SSN {US_SSN}, started {date}, badge {ticket}.",
    "For the background check use {US_SSN}; reach me at {PHONE_NUMBER}.",
    "Email {EMAIL_ADDRESS} or call {PHONE_NUMBER} to confirm the quote for {amount}.",
    "Contact: {name} <{EMAIL_ADDRESS}>, mobile {PHONE_NUMBER}, office in {city}.",
    "Forwarding to {EMAIL_ADDRESS}; cc {EMAIL_ADDRESS}. Version {version} attached.",
    "Please call me back on {PHONE_NUMBER} after {time}, thanks, {name}.",
    "Our new support line is {PHONE_NUMBER} (Mon-Fri). Order {order} ships {date}.",
    "{time} login failed for user {EMAIL_ADDRESS} from {IP_ADDRESS} (attempt {small}).",
    "Firewall blocked {IP_ADDRESS} -> {IP_ADDRESS} port {port} at {time}.",
    "The staging server moved to {IP_ADDRESS}; build {version} deployed by {name}.",
    "GET /v1/quotes/{ticket} 200 client={IP_ADDRESS} bytes={port} sha={hexhash}",
    "Quote {order} for {company}: {qty} units at {amount}, valid until {date}.",
    "Meeting moved to {date} at {time} in room {small}; dial-in code {pin}.",
    "Tracking number {tracking} for order {order}, total {amount}.",
    "Reference {luhnbad} was rejected; please resend the invoice {order}.",
    "{name} ({EMAIL_ADDRESS}) asked to update the card to {CREDIT_CARD} and the phone to {PHONE_NUMBER}.",
    "KYC for {name}: SSN {US_SSN}, IBAN {IBAN_CODE}, email {EMAIL_ADDRESS}.",
    "Payout account {IBAN_CODE}; fallback card {CREDIT_CARD}; notify {EMAIL_ADDRESS}.",
    "Suspicious login from {IP_ADDRESS} to account {EMAIL_ADDRESS}; we texted {PHONE_NUMBER}.",
    "Thanks {name}! Your quote {order} for {amount} is ready. Questions? {PHONE_NUMBER}",
    "Zip {zip}, {city}. Call {PHONE_NUMBER}. Invoice {order} dated {date}.",
    "Build {version} ran on {IP_ADDRESS} in {small} min; commit {hexhash}.",
    "Dear {name}, we could not charge {CREDIT_CARD}. Please update it by {date}.",
]

US_AREA_CODES = [
    "201", "202", "206", "212", "213", "214", "303", "305", "310", "312", "404", "408",
    "415", "503", "512", "602", "617", "646", "702", "713", "718", "773", "805", "917",
]
CARD_TYPES = ["visa16", "visa16", "visa13", "visa19", "mastercard", "mastercard", "amex", "discover", "diners"]
IBAN_LOCALES = ["en_GB", "de_DE", "fr_FR", "nl_NL", "es_ES", "it_IT"]


def group(s, sizes, sep):
    out, i = [], 0
    for n in sizes:
        out.append(s[i:i + n])
        i += n
    if i < len(s):
        out.append(s[i:])
    return sep.join(p for p in out if p)


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)
        self.f = Faker("en_US")
        self.f.seed_instance(seed)
        self.locales = {loc: Faker(loc) for loc in IBAN_LOCALES}
        for i, fk in enumerate(self.locales.values()):
            fk.seed_instance(seed + 1 + i)

    def card(self):
        n = self.f.credit_card_number(self.r.choice(CARD_TYPES))
        style = self.r.random()
        if style < 0.4:
            return n
        sep = " " if style < 0.8 else "-"
        sizes = [4, 6, 5] if len(n) == 15 else ([4, 6, 4] if len(n) == 14 else [4, 4, 4, 4])
        return group(n, sizes, sep)

    def iban(self):
        v = self.locales[self.r.choice(IBAN_LOCALES)].iban()
        return v if self.r.random() < 0.5 else group(v, [4] * 9, " ")

    def ssn(self):
        s = self.f.ssn()
        return s if self.r.random() < 0.8 else s.replace("-", " ")

    def email(self):
        return self.r.choice([self.f.email, self.f.free_email, self.f.company_email])()

    def phone(self):
        r = self.r
        if r.random() < 0.7:
            a = r.choice(US_AREA_CODES)
            e = str(r.randint(2, 9)) + str(r.randint(0, 9)) + str(r.randint(0, 9))
            if e[1:] == "11":
                e = e[0] + "23"
            n = "%04d" % r.randint(0, 9999)
            return r.choice([
                f"({a}) {e}-{n}", f"{a}-{e}-{n}", f"{a}.{e}.{n}", f"+1 {a} {e} {n}",
                f"+1-{a}-{e}-{n}", f"{a} {e} {n}",
            ])
        kind = r.randint(0, 2)
        if kind == 0:  # London, Ofcom drama range 020 7946 0000-0999
            n = "%03d" % r.randint(0, 999)
            return r.choice([f"+44 20 7946 0{n}", f"020 7946 0{n}"])
        if kind == 1:  # Berlin
            n = "%07d" % r.randint(1000000, 9999999)
            return r.choice([f"+49 30 {n}", f"030 {n}"])
        n = "".join(str(r.randint(0, 9)) for _ in range(8))  # Paris
        return r.choice([f"+33 1 {group(n, [2, 2, 2, 2], ' ')}", f"01 {group(n, [2, 2, 2, 2], ' ')}"])

    def ip(self):
        x = self.r.random()
        if x < 0.45:
            return self.f.ipv4_public()
        if x < 0.7:
            return self.f.ipv4_private()
        return self.f.ipv6()

    def filler(self, key):
        r, f = self.r, self.f
        if key == "luhnbad":
            while True:
                n = "".join(str(r.randint(0, 9)) for _ in range(16))
                if not luhn(n):
                    return group(n, [4, 4, 4, 4], " ")
        return {
            "name": f.name, "company": f.company, "city": f.city,
            "order": lambda: f"Q-{r.randint(10000, 99999)}",
            "ticket": lambda: str(r.randint(1000, 999999)),
            "amount": lambda: f"${r.randint(10, 99999)}.{r.randint(0, 99):02d}",
            "date": lambda: f.date(pattern=r.choice(["%Y-%m-%d", "%m/%d/%Y", "%d %B %Y"])),
            "exp": lambda: f"{r.randint(1, 12):02d}/{r.randint(26, 32)}",
            "time": lambda: f.time(pattern="%H:%M:%S"),
            "version": lambda: f"{r.randint(1, 9)}.{r.randint(0, 20)}.{r.randint(0, 99)}",
            "small": lambda: str(r.randint(1, 99)),
            "port": lambda: str(r.randint(1, 65535)),
            "qty": lambda: str(r.randint(1, 5000)),
            "pin": lambda: str(r.randint(100000, 999999)),
            "zip": f.zipcode,
            "tracking": lambda: "1Z" + "".join(r.choice("0123456789ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(16)),
            "hexhash": lambda: "%040x" % r.getrandbits(160),
        }[key]()

    def value(self, entity):
        return {
            "CREDIT_CARD": self.card, "IBAN_CODE": self.iban, "US_SSN": self.ssn,
            "EMAIL_ADDRESS": self.email, "PHONE_NUMBER": self.phone, "IP_ADDRESS": self.ip,
        }[entity]()

    def record(self, i):
        template = self.r.choice(TEMPLATES)
        text, spans, pos = "", [], 0
        for m in re.finditer(r"\{(\w+)\}", template):
            text += template[pos:m.start()]
            key = m.group(1)
            if key in ENTITIES:
                v = self.value(key)
                spans.append({"entity": key, "start": len(text), "end": len(text) + len(v)})
            else:
                v = self.filler(key)
            text += v
            pos = m.end()
        text += template[pos:]
        return {"id": i, "text": text, "spans": spans}


def luhn(n):
    total = 0
    for i, c in enumerate(reversed(n)):
        d = int(c)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--records", type=int, default=10000)
    p.add_argument("--seed", type=int, default=20261129)
    p.add_argument("--prose")
    a = p.parse_args()
    g = Gen(a.seed)
    with open(a.out, "w", encoding="utf-8") as fh:
        for i in range(a.records):
            fh.write(json.dumps(g.record(i), ensure_ascii=False) + "\n")
    if a.prose:
        with open(a.prose, "w", encoding="utf-8") as fh:
            for i in range(a.records // 5):
                text = g.f.paragraph(nb_sentences=12)
                fh.write(json.dumps({"id": i, "text": text, "spans": []}) + "\n")


if __name__ == "__main__":
    main()
