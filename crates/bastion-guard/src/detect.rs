//! The detectors: candidate regexes (linear-time, `regex` crate) followed by validation in
//! code (checksums, registries, parsers). Every public function is pure and allocation-light.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use regex::Regex;

use crate::error::GuardError;
use crate::finding::{EntityKind, Finding, resolve_overlaps};
use crate::phone::PhonePlans;
use crate::secrets;

/// Shortest run of base64/base64url/hex characters the entropy detector looks at (chars).
pub const ENTROPY_RUN_LEN_MIN: usize = 32;
/// Shannon entropy, in bits per character, at or above which a base64/base64url run of at
/// least [`ENTROPY_RUN_LEN_MIN`] characters (with upper case, lower case and at least two
/// digits) is reported as [`EntityKind::HighEntropy`]. A uniformly random 32-character
/// base64 string has about 4.5 bits/char; English identifiers and paths stay below 4.
pub const ENTROPY_BITS_MIN_BASE64: f64 = 4.0;
/// Shannon entropy, in bits per character, at or above which a hex run of at least
/// [`ENTROPY_RUN_LEN_MIN`] characters (with letters and digits) is reported. A random
/// 32-character hex string has about 3.7 bits/char (maximum 4).
pub const ENTROPY_BITS_MIN_HEX: f64 = 3.0;
/// Longest PEM block looked at after a `BEGIN … PRIVATE KEY` line (bytes).
pub const PEM_LEN_MAX: usize = 64 * 1024;

/// Regions (ISO 3166-1 alpha-2) whose national formats phone candidates without `+` are tried in. Numbers with a
/// leading trunk `0` are tried in the non-NANP regions only, others in the US (NANP).
pub const PHONE_REGIONS_TRUNK_ZERO: [&str; 4] = ["GB", "DE", "FR", "IN"];

/// Candidate patterns. ASCII word boundaries (`(?-u:\b)`) keep the lazy DFA on its fast path.
const CARD_RE: &str = r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)";
const IBAN_RE: &str = r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,8}(?: ?[A-Z0-9]{1,3})?(?-u:\b)";
const SSN_RE: &str = r"(?-u:\b)[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}(?-u:\b)";
const EMAIL_RE: &str = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[A-Za-z0-9][A-Za-z0-9-]*\.)+[A-Za-z]{2,63}(?-u:\b)";
const PHONE_RE: &str = r"(?:\+|\()?[0-9](?:[0-9]|[ .-][0-9]|[ .-]?\([0-9]|\)[ .-]?[0-9]){5,22}";
const IPV4_RE: &str = r"(?-u:\b)[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?-u:\b)";
const IPV6_RE: &str = r"[0-9A-Fa-f.:]*:[0-9A-Fa-f.]*:[0-9A-Fa-f.:]*";
const JWT_RE: &str = r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*";
const ENTROPY_RE: &str = r"[A-Za-z0-9+/_-]{32,}={0,2}";

/// Compiled detectors. Build one with [`Detector::new`] (or use [`Detector::shared`]) and
/// call [`Detector::detect`]; it is `Send + Sync` and holds no per-text state.
#[derive(Debug)]
pub struct Detector {
    card: Regex,
    iban: Regex,
    ssn: Regex,
    email: Regex,
    phone: Regex,
    ipv4: Regex,
    ipv6: Regex,
    jwt: Regex,
    entropy: Regex,
    secrets: secrets::SecretPatterns,
    phones: PhonePlans,
}

static SHARED: LazyLock<Result<Detector, GuardError>> = LazyLock::new(Detector::new);

impl Detector {
    /// Compiles every pattern.
    ///
    /// # Errors
    /// [`GuardError::Pattern`] if a built-in pattern does not compile (a bug; the tests
    /// build one).
    pub fn new() -> Result<Self, GuardError> {
        Ok(Detector {
            card: compile(CARD_RE)?,
            iban: compile(IBAN_RE)?,
            ssn: compile(SSN_RE)?,
            email: compile(EMAIL_RE)?,
            phone: compile(PHONE_RE)?,
            ipv4: compile(IPV4_RE)?,
            ipv6: compile(IPV6_RE)?,
            jwt: compile(JWT_RE)?,
            entropy: compile(ENTROPY_RE)?,
            secrets: secrets::SecretPatterns::new()?,
            phones: PhonePlans::new(),
        })
    }

    /// The process-wide detector, compiled on first use.
    ///
    /// # Errors
    /// [`GuardError::Pattern`] as for [`Detector::new`].
    pub fn shared() -> Result<&'static Detector, GuardError> {
        SHARED.as_ref().map_err(Clone::clone)
    }

    /// Every finding of every kind in `text`, overlaps resolved
    /// ([`resolve_overlaps`]), sorted by start offset.
    #[must_use]
    pub fn detect(&self, text: &str) -> Vec<Finding> {
        self.detect_kinds(text, &EntityKind::ALL)
    }

    /// The findings of the given kinds only, overlaps resolved among them.
    #[must_use]
    pub fn detect_kinds(&self, text: &str, kinds: &[EntityKind]) -> Vec<Finding> {
        let want = |k: EntityKind| kinds.contains(&k);
        let mut out = Vec::new();
        let has_digit = text.bytes().any(|b| b.is_ascii_digit());
        if has_digit {
            if want(EntityKind::Card) {
                self.cards(text, &mut out);
            }
            if want(EntityKind::Iban) {
                self.ibans(text, &mut out);
            }
            if want(EntityKind::Ssn) {
                self.ssns(text, &mut out);
            }
            if want(EntityKind::Phone) {
                self.phones(text, &mut out);
            }
            if want(EntityKind::Ipv4) {
                self.ipv4s(text, &mut out);
            }
        }
        if want(EntityKind::Email) && text.contains('@') {
            self.emails(text, &mut out);
        }
        if want(EntityKind::Ipv6) && text.contains(':') {
            self.ipv6s(text, &mut out);
        }
        if want(EntityKind::PrivateKey) {
            self.secrets.private_keys(text, &mut out);
        }
        if want(EntityKind::ApiKey) {
            self.secrets.api_keys(text, &mut out);
        }
        if want(EntityKind::Jwt) && text.contains("eyJ") {
            self.jwts(text, &mut out);
        }
        if want(EntityKind::HighEntropy) {
            self.high_entropy(text, &mut out);
        }
        resolve_overlaps(out)
    }

    /// The credential findings only ([`EntityKind::is_secret`]), overlaps resolved.
    #[must_use]
    pub fn detect_secrets(&self, text: &str) -> Vec<Finding> {
        self.detect_kinds(
            text,
            &[
                EntityKind::PrivateKey,
                EntityKind::Jwt,
                EntityKind::ApiKey,
                EntityKind::HighEntropy,
            ],
        )
    }

    fn cards(&self, text: &str, out: &mut Vec<Finding>) {
        for m in self.card.find_iter(text) {
            if glued(text, m.start(), m.end()) {
                continue;
            }
            if let Some((s, e)) = best_card_span(m.as_str()) {
                out.push(found(EntityKind::Card, m.start() + s, m.start() + e, 1.0));
            }
        }
    }

    fn ibans(&self, text: &str, out: &mut Vec<Finding>) {
        for m in self.iban.find_iter(text) {
            let cand = m.as_str();
            // Longest valid prefix ending on an alphanumeric character: the pattern may
            // have swallowed a following word of four capitals or digits.
            let ends = cand
                .char_indices()
                .filter(|(_, c)| c.is_ascii_alphanumeric())
                .map(|(i, _)| i + 1)
                .collect::<Vec<_>>();
            for &end in ends.iter().rev() {
                let Some(prefix) = cand.get(..end) else {
                    continue;
                };
                if prefix.len() < 15 {
                    break;
                }
                if iban::Iban::from_str(prefix).is_ok() {
                    out.push(found(EntityKind::Iban, m.start(), m.start() + end, 1.0));
                    break;
                }
            }
        }
    }

    fn ssns(&self, text: &str, out: &mut Vec<Finding>) {
        for m in self.ssn.find_iter(text) {
            if glued(text, m.start(), m.end()) {
                continue;
            }
            if ssn_valid(m.as_str()) {
                out.push(found(EntityKind::Ssn, m.start(), m.end(), 0.9));
            }
        }
    }

    fn emails(&self, text: &str, out: &mut Vec<Finding>) {
        for m in self.email.find_iter(text) {
            let (mut start, end) = (m.start(), m.end());
            // A local part does not start with a quote or a slash in running text.
            while let Some(b) = text.as_bytes().get(start) {
                if matches!(b, b'\'' | b'/' | b'`' | b'=' | b'{' | b'|') {
                    start += 1;
                } else {
                    break;
                }
            }
            if let Some(addr) = text.get(start..end)
                && email_valid(addr)
            {
                out.push(found(EntityKind::Email, start, end, 1.0));
            }
        }
    }

    fn phones(&self, text: &str, out: &mut Vec<Finding>) {
        for m in self.phone.find_iter(text) {
            let (start, end) = (m.start(), m.end());
            if start > 0 {
                // Not inside a word or a longer number (`x123`, `12.345`).
                let prev = text.as_bytes().get(start - 1).copied().unwrap_or(b' ');
                if prev.is_ascii_alphanumeric() || prev == b'_' {
                    continue;
                }
            }
            if glued(text, start, end) || next_is_word(text, end) {
                continue;
            }
            if let Some((s, e, score)) = best_phone_span(&self.phones, m.as_str()) {
                out.push(found(EntityKind::Phone, start + s, start + e, score));
            }
        }
    }

    fn ipv4s(&self, text: &str, out: &mut Vec<Finding>) {
        for m in self.ipv4.find_iter(text) {
            if glued(text, m.start(), m.end()) {
                continue;
            }
            if Ipv4Addr::from_str(m.as_str()).is_ok() {
                out.push(found(EntityKind::Ipv4, m.start(), m.end(), 0.95));
            }
        }
    }

    fn ipv6s(&self, text: &str, out: &mut Vec<Finding>) {
        for m in self.ipv6.find_iter(text) {
            let (mut start, mut end) = (m.start(), m.end());
            let bytes = text.as_bytes();
            // Trim a single leading colon (`addr:fe80::1`) and trailing dots/colons.
            if bytes.get(start) == Some(&b':') && bytes.get(start + 1) != Some(&b':') {
                start += 1;
            }
            while end > start
                && matches!(bytes.get(end - 1), Some(b'.' | b':'))
                && !(end >= start + 2 && bytes.get(end - 2) == Some(&b':'))
            {
                end -= 1;
            }
            if prev_is_word(text, start) || next_is_word(text, end) {
                continue;
            }
            let Some(cand) = text.get(start..end) else {
                continue;
            };
            let groups = cand.split(':').filter(|g| !g.is_empty()).count();
            if groups < 2 && cand != "::1" {
                continue;
            }
            if Ipv6Addr::from_str(cand).is_ok() {
                out.push(found(EntityKind::Ipv6, start, end, 0.95));
            }
        }
    }

    fn jwts(&self, text: &str, out: &mut Vec<Finding>) {
        for m in self.jwt.find_iter(text) {
            if prev_is_b64url(text, m.start()) {
                continue;
            }
            if jwt_valid(m.as_str()) {
                out.push(found(EntityKind::Jwt, m.start(), m.end(), 1.0));
            }
        }
    }

    fn high_entropy(&self, text: &str, out: &mut Vec<Finding>) {
        for m in self.entropy.find_iter(text) {
            if let Some(score) = entropy_score(m.as_str()) {
                out.push(found(EntityKind::HighEntropy, m.start(), m.end(), score));
            }
        }
    }
}

fn compile(pattern: &str) -> Result<Regex, GuardError> {
    Regex::new(pattern).map_err(|e| GuardError::Pattern(e.to_string()))
}

pub(crate) fn found(kind: EntityKind, start: usize, end: usize, score: f32) -> Finding {
    Finding {
        kind,
        start,
        end,
        score,
    }
}

fn prev_is_word(text: &str, start: usize) -> bool {
    start > 0
        && text
            .as_bytes()
            .get(start - 1)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

fn next_is_word(text: &str, end: usize) -> bool {
    text.as_bytes()
        .get(end)
        .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

pub(crate) fn prev_is_b64url(text: &str, start: usize) -> bool {
    start > 0
        && text
            .as_bytes()
            .get(start - 1)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
}

/// Whether the span continues a longer number: `1.2.3.4.5`, `123-45-6789-0`, `12.4111…`.
fn glued(text: &str, start: usize, end: usize) -> bool {
    let b = text.as_bytes();
    let before = start >= 2
        && matches!(b.get(start - 1), Some(b'.' | b'-' | b','))
        && b.get(start - 2).is_some_and(u8::is_ascii_digit);
    let after = matches!(b.get(end), Some(b'.' | b'-' | b','))
        && b.get(end + 1).is_some_and(u8::is_ascii_digit);
    before || after
}

/// Luhn (ISO/IEC 7812-1 Annex B) over ASCII digits; false on any other byte.
#[must_use]
pub fn luhn_valid(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        if !d.is_ascii_digit() {
            return false;
        }
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// Whether `digits` (ASCII digits, no separators) start with a known issuer range and have a
/// length that issuer uses. Ranges: Visa 4 (13, 16, 19); Mastercard 51–55 and 2221–2720
/// (16); American Express 34, 37 (15); Discover 6011, 622126–622925, 644–649, 65 (16–19);
/// Diners Club 300–305, 3095, 36, 38–39 (14–19); JCB 3528–3589 (16–19) and 1800, 2131 (15);
/// UnionPay 62, 81 (16–19); Maestro 5018, 5020, 5038, 5893, 6304, 6759, 6761–6763 (13–19);
/// Mir 2200–2204 (16–19); RuPay 60, 508 (16).
#[must_use]
pub fn card_brand_ok(digits: &[u8]) -> bool {
    let len = digits.len();
    let prefix = |n: usize| -> u32 {
        digits
            .iter()
            .take(n)
            .fold(0u32, |acc, d| acc * 10 + u32::from(d.wrapping_sub(b'0')))
    };
    let (p1, p2, p3, p4, p6) = (prefix(1), prefix(2), prefix(3), prefix(4), prefix(6));
    let visa = p1 == 4 && matches!(len, 13 | 16 | 19);
    let mastercard = ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && len == 16;
    let amex = (p2 == 34 || p2 == 37) && len == 15;
    let discover =
        (p4 == 6011 || (622_126..=622_925).contains(&p6) || (644..=649).contains(&p3) || p2 == 65)
            && (16..=19).contains(&len);
    let diners = ((300..=305).contains(&p3) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39)
        && (14..=19).contains(&len);
    let jcb = ((3528..=3589).contains(&p4) && (16..=19).contains(&len))
        || ((p4 == 1800 || p4 == 2131) && len == 15);
    let unionpay = (p2 == 62 || p2 == 81) && (16..=19).contains(&len);
    let maestro = matches!(p4, 5018 | 5020 | 5038 | 5893 | 6304 | 6759 | 6761..=6763)
        && (13..=19).contains(&len);
    let mir = (2200..=2204).contains(&p4) && (16..=19).contains(&len);
    let rupay = (p2 == 60 || p3 == 508) && len == 16;
    visa || mastercard || amex || discover || diners || jcb || unionpay || maestro || mir || rupay
}

/// The longest sub-span of a card candidate (aligned on its separator groups) whose digits
/// form a valid card number, as byte offsets into `cand`.
fn best_card_span(cand: &str) -> Option<(usize, usize)> {
    let bytes = cand.as_bytes();
    let seps: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_digit())
        .collect();
    // One separator style per number: `4111 1111-1111 1111` is not a card.
    if seps.windows(2).any(|w| w.first() != w.last()) {
        return None;
    }
    // Group boundaries: (start, end) of each digit run.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let s = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        groups.push((s, i));
        i += 1;
    }
    let digits_in = |a: usize, b: usize| -> Vec<u8> {
        bytes
            .get(a..b)
            .unwrap_or_default()
            .iter()
            .copied()
            .filter(u8::is_ascii_digit)
            .collect()
    };
    let mut best: Option<(usize, usize)> = None;
    for (gi, &(s, _)) in groups.iter().enumerate() {
        for &(_, e) in groups.iter().skip(gi).rev() {
            if best.is_some_and(|(bs, be)| be - bs >= e - s) {
                break;
            }
            let d = digits_in(s, e);
            if (13..=19).contains(&d.len()) && luhn_valid(&d) && card_brand_ok(&d) {
                best = Some((s, e));
                break;
            }
        }
    }
    best
}

/// Whether `s` (`AAA-GG-SSSS` or `AAA GG SSSS`, one separator style) is an SSN the SSA could
/// have issued: area not 000, 666 or 900–999; group not 00; serial not 0000; and not one of
/// the numbers the SSA has published as misused examples (078-05-1120, 219-09-9999).
#[must_use]
pub fn ssn_valid(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 11 || b.get(3) != b.get(6) || !matches!(b.get(3), Some(b'-' | b' ')) {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> { s.get(r)?.parse::<u32>().ok() };
    let (Some(area), Some(group), Some(serial)) = (num(0..3), num(4..6), num(7..11)) else {
        return false;
    };
    let misused = (area, group, serial) == (78, 5, 1120) || (area, group, serial) == (219, 9, 9999);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 && !misused
}

/// Practical RFC 5322 §3.4.1 check of a dot-atom `addr-spec`: local part ≤ 64 bytes, domain
/// ≤ 253 bytes, labels of 1–63 letters, digits and inner hyphens, an alphabetic TLD.
#[must_use]
pub fn email_valid(addr: &str) -> bool {
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return false;
    };
    if local.is_empty() || local.len() > 64 || domain.len() > 253 {
        return false;
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|t| t.len() >= 2 && t.bytes().all(|b| b.is_ascii_alphabetic()))
}

/// The phone number in a candidate: the whole candidate, or it without its first and/or last
/// digit group (`2 415-555-0134`, `415-555-0134 2024`). Offsets into `cand`, and the score.
fn best_phone_span(plans: &PhonePlans, cand: &str) -> Option<(usize, usize, f32)> {
    if let Some(score) = phone_valid(plans, cand) {
        return Some((0, cand.len(), score));
    }
    let first_sep = cand.find([' ', '.', '-']);
    let last_sep = cand.rfind([' ', '.', '-']);
    let mut tries: Vec<(usize, usize)> = Vec::with_capacity(3);
    if let Some(f) = first_sep {
        tries.push((f + 1, cand.len()));
    }
    if let Some(l) = last_sep {
        tries.push((0, l));
    }
    if let (Some(f), Some(l)) = (first_sep, last_sep)
        && f < l
    {
        tries.push((f + 1, l));
    }
    tries.into_iter().find_map(|(s, e)| {
        let sub = cand.get(s..e)?;
        let first = sub.bytes().next()?;
        let last = sub.bytes().last()?;
        if !(first.is_ascii_digit() || first == b'+' || first == b'(') || !last.is_ascii_digit() {
            return None;
        }
        // Only the unmistakable shapes are cut out of a longer run of digit groups (`+…`,
        // NANP 3-3-4): a trunk-0 national number inside a reference number is too likely
        // a coincidence.
        let groups: Vec<usize> = sub
            .split(|c: char| !c.is_ascii_digit())
            .filter(|g| !g.is_empty())
            .map(str::len)
            .collect();
        if first != b'+' && !matches!(groups.as_slice(), [3, 3, 4]) {
            return None;
        }
        phone_valid(plans, sub).map(|score| (s, e, score))
    })
}

/// Validates a phone candidate against libphonenumber's metadata ([`PhonePlans`]): `+…`
/// numbers as E.164 with their own country code; others as national numbers of the
/// US/NANP, or, with a leading trunk `0`, of [`PHONE_REGIONS_TRUNK_ZERO`]. Returns a score.
fn phone_valid(plans: &PhonePlans, cand: &str) -> Option<f32> {
    let digit_count = cand.bytes().filter(u8::is_ascii_digit).count();
    if !(7..=15).contains(&digit_count) {
        return None;
    }
    // Balanced parentheses only.
    let opens = cand.bytes().filter(|b| *b == b'(').count();
    let closes = cand.bytes().filter(|b| *b == b')').count();
    if opens != closes || opens > 1 {
        return None;
    }
    let groups: Vec<usize> = cand
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .map(str::len)
        .collect();
    let digits: String = cand.chars().filter(char::is_ascii_digit).collect();
    if cand.starts_with('+') {
        // `+44 (0)20 …`: the bracketed trunk 0 is not dialled from abroad.
        let international: String = cand
            .replacen("(0)", "", 1)
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        // `+1`: the NANP shape is checked first, which rules out most non-numbers cheaply.
        if international.starts_with('1')
            && !(groups.first() == Some(&1)
                && nanp_shape(
                    groups.get(1..).unwrap_or_default(),
                    international.as_bytes().get(1..).unwrap_or_default(),
                ))
        {
            return None;
        }
        return plans.valid_international(&international).then_some(0.9);
    }
    let has_structure = cand.bytes().any(|b| matches!(b, b' ' | b'-' | b'.' | b'('));
    let ok = if digits.starts_with('0') {
        // National lengths with the trunk 0 (national numbering plans): GB 10–11, DE 6–14,
        // FR 10, IN 11. Only plausible regions are tried.
        PHONE_REGIONS_TRUNK_ZERO.into_iter().any(|r| {
            let n = digit_count;
            let plausible = match r {
                "GB" => (10..=11).contains(&n),
                "DE" => (6..=14).contains(&n),
                "FR" => n == 10,
                _ => n == 11,
            };
            plausible && plans.valid_national(r, &digits)
        })
    } else {
        nanp_shape(&groups, digits.as_bytes()) && plans.valid_national("US", &digits)
    };
    // A bare run of digits is weaker evidence than a formatted number.
    ok.then_some(if has_structure { 0.8 } else { 0.5 })
}

/// Whether digit groups and digits have the shape of a NANP national number (ATIS-0300051):
/// ten digits grouped 3-3-4, 3-7 or 10; area code and exchange `[2-9]XX`, not `N11`; area
/// code middle digit not 9.
fn nanp_shape(groups: &[usize], digits: &[u8]) -> bool {
    let shape_ok = matches!(groups, [3, 3, 4] | [3, 7] | [10]);
    let d = |i: usize| digits.get(i).copied().unwrap_or(b'0');
    let n11 = |i: usize| d(i + 1) == b'1' && d(i + 2) == b'1';
    shape_ok
        && digits.len() == 10
        && d(0) >= b'2'
        && d(1) != b'9'
        && !n11(0)
        && d(3) >= b'2'
        && !n11(3)
}

/// Whether a JWT candidate has a base64url header that decodes to a JSON object with a string
/// `alg` member (RFC 7515 §4.1.1) and a base64url payload.
fn jwt_valid(cand: &str) -> bool {
    let mut parts = cand.split('.');
    let (Some(header), Some(payload)) = (parts.next(), parts.next()) else {
        return false;
    };
    let Ok(header_bytes) = URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    let alg_ok = serde_json::from_slice::<serde_json::Value>(&header_bytes)
        .ok()
        .and_then(|v| v.get("alg").map(serde_json::Value::is_string))
        .unwrap_or(false);
    alg_ok && URL_SAFE_NO_PAD.decode(payload).is_ok()
}

/// Shannon entropy of the byte distribution of `s`, in bits per byte (0 for empty input).
#[must_use]
pub fn shannon_entropy_bits(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        if let Some(c) = counts.get_mut(usize::from(b)) {
            *c += 1;
        }
    }
    let n = f64::from(u32::try_from(s.len()).unwrap_or(u32::MAX));
    if n == 0.0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum()
}

/// The score of a base64/hex run if it passes the entropy thresholds.
fn entropy_score(run: &str) -> Option<f32> {
    let body = run.trim_end_matches('=');
    if body.len() < ENTROPY_RUN_LEN_MIN {
        return None;
    }
    let digits = body.bytes().filter(u8::is_ascii_digit).count();
    let upper = body.bytes().any(|b| b.is_ascii_uppercase());
    let lower = body.bytes().any(|b| b.is_ascii_lowercase());
    let entropy = shannon_entropy_bits(body);
    if body.bytes().all(|b| b.is_ascii_hexdigit()) {
        let letters = body.len() > digits;
        return (digits > 0 && letters && entropy >= ENTROPY_BITS_MIN_HEX).then_some(0.5);
    }
    (upper && lower && digits >= 2 && entropy >= ENTROPY_BITS_MIN_BASE64).then_some(0.7)
}
