//! Output neutralization: no URL to a host off the allowlist survives in model output, so a
//! rendered answer cannot make the browser fetch (or invite a click on) an attacker's URL
//! carrying data — the markdown-image exfiltration of EchoLeak (CVE-2025-32711) and its
//! reference-style variant.
//!
//! Passes, in order:
//! 1. reference definitions (`[1]: https://…`, CommonMark §4.7) to a host off the list are
//!    deleted, and their labels remembered;
//! 2. inline images and links (`![a](u)`, `[a](u "t")`, CommonMark §6.3–6.4), full,
//!    collapsed and shortcut references to deleted definitions, autolinks (`<https://…>`,
//!    §6.5) and raw HTML tags with a URL attribute (`<img src=…>`, `<a href=…>`, §6.6) are
//!    rewritten: an image becomes `[image removed]`, a link its text followed by
//!    `[link removed]`, a tag or autolink `[image removed]`/`[link removed]`;
//! 3. a last sweep replaces any remaining bare `scheme://…`, `//host…` or `www.…` URL (GFM
//!    autolinks) to a host off the list with `[link removed]`.
//!
//! A URL is kept only if it parses (WHATWG URL Standard, the `url` crate: IDNA to punycode,
//! lower case, `\` as `/`, userinfo split off) as an absolute `http`/`https` URL whose host
//! equals an allowlisted host exactly. Relative URLs, `data:`, `javascript:`, `mailto:` and
//! destinations holding character references are not kept. Code spans and blocks are treated
//! like any other text (stricter than a renderer).

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;

use crate::error::GuardError;

/// What replaces a removed image (markdown or HTML).
pub const IMAGE_REMOVED: &str = "[image removed]";
/// What follows the text of a removed link, or replaces a removed autolink or bare URL.
pub const LINK_REMOVED: &str = "[link removed]";
/// Longest link text, destination or HTML tag the parser looks at (bytes); longer
/// constructs are left to the final URL sweep.
const CONSTRUCT_LEN_MAX: usize = 8 * 1024;
/// Deepest nesting of links inside link texts that is rewritten recursively.
const NESTING_MAX: usize = 8;
/// Bytes the construct parsers may scan per byte of input (plus [`SCAN_BUDGET_BASE`]):
/// text full of unclosed `[` or `<` would otherwise cost `CONSTRUCT_LEN_MAX` per byte. Past
/// the budget, constructs are left to the final URL sweep, which still removes every
/// off-list absolute or protocol-relative URL.
const SCAN_BUDGET_PER_BYTE: usize = 32;
/// Fixed part of the scan budget (bytes).
const SCAN_BUDGET_BASE: usize = 1024 * 1024;

/// The hosts whose URLs may stay in output, compared exactly after WHATWG host parsing
/// (IDNA, lower case). Ports are not compared.
#[derive(Clone, Debug, Default)]
pub struct UrlAllowlist {
    hosts: HashSet<String>,
}

impl UrlAllowlist {
    /// An allowlist of `hosts` (`docs.example.com`, `bücher.example`, `[::1]`).
    ///
    /// # Errors
    /// [`GuardError::InvalidHost`] for an entry that is not a valid host.
    pub fn new<I, S>(hosts: I) -> Result<Self, GuardError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = HashSet::new();
        for h in hosts {
            let h = h.as_ref();
            let parsed = url::Host::parse(h).map_err(|_| GuardError::InvalidHost(h.to_owned()))?;
            set.insert(parsed.to_string());
        }
        Ok(UrlAllowlist { hosts: set })
    }

    /// An allowlist that keeps no URL at all.
    #[must_use]
    pub fn none() -> Self {
        UrlAllowlist::default()
    }

    /// Whether the URL `raw` (as written in markdown or HTML: CommonMark backslash escapes
    /// are undone first) may stay.
    #[must_use]
    pub fn allows(&self, raw: &str) -> bool {
        let unescaped = unescape_backslashes(raw.trim());
        if unescaped.is_empty()
            || unescaped
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
            || has_char_reference(&unescaped)
        {
            return false;
        }
        let Ok(u) = url::Url::parse(&unescaped) else {
            return false;
        };
        matches!(u.scheme(), "http" | "https")
            && u.host_str().is_some_and(|h| self.hosts.contains(h))
    }
}

/// The neutralized text and what was removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Neutralized {
    /// The text with every off-list URL construct rewritten.
    pub text: String,
    /// Images removed (markdown images and HTML image-like tags).
    pub images_removed: usize,
    /// Links removed (inline, reference, autolinks, HTML, bare URLs, definitions).
    pub links_removed: usize,
}

impl Neutralized {
    /// Whether anything was removed.
    #[must_use]
    pub fn changed(&self) -> bool {
        self.images_removed + self.links_removed > 0
    }
}

static DEFINITION_RE: LazyLock<Result<Regex, GuardError>> = LazyLock::new(|| {
    compile(
        r#"(?m)^ {0,3}\[((?:[^\]\\\n]|\\.){1,999})\]:[ \t]*(?:\r?\n[ \t]*)?(<[^<>\n]*>|[^\s<]\S*)(?:[ \t]+(?:"[^"\n]*"|'[^'\n]*'|\([^()\n]*\)))?[ \t]*\r?$"#,
    )
});
static AUTOLINK_RE: LazyLock<Result<Regex, GuardError>> =
    LazyLock::new(|| compile(r"^<([A-Za-z][A-Za-z0-9+.-]{1,31}:[^<>\x00-\x20]*)>"));
static BARE_URL_RE: LazyLock<Result<Regex, GuardError>> = LazyLock::new(|| {
    compile(
        r#"(?i)(?:[a-z][a-z0-9+.-]{0,31}:)?//[^\s<>"'`\\]+|(?-u:\b)www\.[a-z0-9-]+(?:\.[a-z0-9-]+)+[^\s<>"'`]*"#,
    )
});

fn compile(p: &str) -> Result<Regex, GuardError> {
    Regex::new(p).map_err(|e| GuardError::Pattern(e.to_string()))
}

/// Rewrites every URL construct in `text` whose URL `allow` does not keep (see the module
/// documentation for the passes and the replacement texts).
///
/// # Errors
/// [`GuardError::Pattern`] if a built-in pattern does not compile (a bug).
pub fn neutralize(text: &str, allow: &UrlAllowlist) -> Result<Neutralized, GuardError> {
    let def_re = DEFINITION_RE.as_ref().map_err(Clone::clone)?;
    let auto_re = AUTOLINK_RE.as_ref().map_err(Clone::clone)?;
    let bare_re = BARE_URL_RE.as_ref().map_err(Clone::clone)?;
    let mut result = Neutralized::default();

    // Pass 1: definitions.
    let mut defs: HashMap<String, bool> = HashMap::new();
    let mut without_defs = String::with_capacity(text.len());
    let mut at = 0;
    for caps in def_re.captures_iter(text) {
        let (Some(whole), Some(label), Some(dest)) = (caps.get(0), caps.get(1), caps.get(2)) else {
            continue;
        };
        let dest = dest.as_str();
        let dest = dest
            .strip_prefix('<')
            .and_then(|d| d.strip_suffix('>'))
            .unwrap_or(dest);
        let ok = allow.allows(dest);
        let key = normalize_label(label.as_str());
        // A label with any blocked definition counts as blocked.
        let entry = defs.entry(key).or_insert(true);
        *entry = *entry && ok;
        if !ok {
            without_defs.push_str(text.get(at..whole.start()).unwrap_or_default());
            at = whole.end();
            result.links_removed += 1;
        }
    }
    without_defs.push_str(text.get(at..).unwrap_or_default());

    // Pass 2: inline constructs.
    let mut rewriter = Inline {
        allow,
        defs: &defs,
        autolink: auto_re,
        budget: without_defs
            .len()
            .saturating_mul(SCAN_BUDGET_PER_BYTE)
            .saturating_add(SCAN_BUDGET_BASE),
        images_removed: 0,
        links_removed: 0,
    };
    let inline = rewriter.rewrite(&without_defs, 0);
    result.images_removed += rewriter.images_removed;
    result.links_removed += rewriter.links_removed;

    // Pass 3: bare URLs.
    let mut out = String::with_capacity(inline.len());
    let mut at = 0;
    for m in bare_re.find_iter(&inline) {
        let raw = trim_url_tail(m.as_str());
        let absolute = if raw.starts_with("//") {
            format!("https:{raw}")
        } else if raw.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("www.")) {
            format!("https://{raw}")
        } else {
            raw.to_owned()
        };
        // `a//b` in code is not a URL: want a dotted host or a scheme.
        if raw.starts_with("//") && !looks_like_host(raw.get(2..).unwrap_or_default()) {
            continue;
        }
        if allow.allows(&absolute) {
            continue;
        }
        out.push_str(inline.get(at..m.start()).unwrap_or_default());
        out.push_str(LINK_REMOVED);
        at = m.start() + raw.len();
        result.links_removed += 1;
    }
    out.push_str(inline.get(at..).unwrap_or_default());
    result.text = out;
    Ok(result)
}

struct Inline<'a> {
    allow: &'a UrlAllowlist,
    defs: &'a HashMap<String, bool>,
    autolink: &'a Regex,
    /// Bytes the construct parsers may still scan.
    budget: usize,
    images_removed: usize,
    links_removed: usize,
}

impl Inline<'_> {
    fn rewrite(&mut self, s: &str, depth: usize) -> String {
        let bytes = s.as_bytes();
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        let mut copied = 0;
        while i < bytes.len() {
            let b = bytes.get(i).copied().unwrap_or(0);
            let replaced = match b {
                b'\\' => {
                    // A backslash escape: the next character is literal.
                    i += 2;
                    continue;
                }
                b'[' | b'!' if depth <= NESTING_MAX && self.budget > 0 => self.link_at(s, i, depth),
                b'<' if self.budget > 0 => self.tag_at(s, i),
                _ => None,
            };
            match replaced {
                Some((end, text)) => {
                    out.push_str(s.get(copied..i).unwrap_or_default());
                    out.push_str(&text);
                    i = end;
                    copied = end;
                }
                None => i += 1,
            }
        }
        out.push_str(s.get(copied..).unwrap_or_default());
        out
    }

    /// A link or image starting at `i` (`[` or `![`): its end and its replacement.
    fn link_at(&mut self, s: &str, i: usize, depth: usize) -> Option<(usize, String)> {
        let bytes = s.as_bytes();
        let image = bytes.get(i) == Some(&b'!');
        let open = if image { i + 1 } else { i };
        if bytes.get(open) != Some(&b'[') {
            return None;
        }
        let close = matching_bracket(s, open, &mut self.budget)?;
        let label_text = s.get(open + 1..close)?;
        let after = close + 1;
        // Inline: `](dest "title")`.
        if bytes.get(after) == Some(&b'(')
            && let Some((dest, end)) = inline_destination(s, after, &mut self.budget)
        {
            let ok = self.allow.allows(dest);
            return Some((
                end,
                self.replace(s, i, open, close, end, label_text, ok, image, depth),
            ));
        }
        // Full or collapsed reference: `][label]` or `][]`.
        if bytes.get(after) == Some(&b'[')
            && let Some(lclose) = matching_bracket(s, after, &mut self.budget)
        {
            let label = s.get(after + 1..lclose)?;
            let key = if label.trim().is_empty() {
                normalize_label(label_text)
            } else {
                normalize_label(label)
            };
            let ok = *self.defs.get(&key)?;
            let end = lclose + 1;
            return Some((
                end,
                self.replace(s, i, open, close, end, label_text, ok, image, depth),
            ));
        }
        // Shortcut reference: `[label]` alone.
        let ok = *self.defs.get(&normalize_label(label_text))?;
        Some((
            after,
            self.replace(s, i, open, close, after, label_text, ok, image, depth),
        ))
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call shape for three link forms"
    )]
    fn replace(
        &mut self,
        s: &str,
        i: usize,
        open: usize,
        close: usize,
        end: usize,
        label_text: &str,
        ok: bool,
        image: bool,
        depth: usize,
    ) -> String {
        let inner = self.rewrite(label_text, depth + 1);
        if ok {
            // Keep the construct, with its text rewritten (a nested image may be off-list).
            let mut kept = String::new();
            kept.push_str(s.get(i..=open).unwrap_or_default());
            kept.push_str(&inner);
            kept.push_str(s.get(close..end).unwrap_or_default());
            kept
        } else if image {
            self.images_removed += 1;
            IMAGE_REMOVED.to_owned()
        } else {
            self.links_removed += 1;
            if inner.trim().is_empty() {
                LINK_REMOVED.to_owned()
            } else {
                format!("{inner} {LINK_REMOVED}")
            }
        }
    }

    /// An autolink or an HTML tag starting at `i`: its end and its replacement, if removed.
    fn tag_at(&mut self, s: &str, i: usize) -> Option<(usize, String)> {
        let rest = s.get(i..)?;
        if let Some(caps) = self.autolink.captures(rest) {
            let (whole, url) = (caps.get(0)?, caps.get(1)?);
            if self.allow.allows(url.as_str()) {
                return None;
            }
            self.links_removed += 1;
            return Some((i + whole.end(), LINK_REMOVED.to_owned()));
        }
        let tag = parse_tag(rest, &mut self.budget)?;
        let blocked = tag.urls.iter().any(|u| !self.allow.allows(u)) || tag.css_url;
        if !blocked {
            return None;
        }
        let replacement = if IMAGE_TAGS.contains(&tag.name.as_str()) {
            self.images_removed += 1;
            IMAGE_REMOVED
        } else {
            self.links_removed += 1;
            LINK_REMOVED
        };
        Some((i + tag.len, replacement.to_owned()))
    }
}

/// Tags whose URL is fetched on render: replaced by [`IMAGE_REMOVED`].
const IMAGE_TAGS: &[&str] = &[
    "img", "image", "picture", "source", "video", "audio", "track", "svg", "iframe", "embed",
    "object", "script", "link", "input", "body", "table", "td", "frame", "style", "meta",
];
/// Attributes that hold a URL (HTML Living Standard attribute index, plus legacy ones).
const URL_ATTRS: &[&str] = &[
    "src",
    "href",
    "srcset",
    "poster",
    "background",
    "action",
    "formaction",
    "data",
    "cite",
    "longdesc",
    "lowsrc",
    "dynsrc",
    "ping",
    "manifest",
    "codebase",
    "archive",
    "xlink:href",
    "content",
    "icon",
    "profile",
    "usemap",
];

struct Tag {
    name: String,
    len: usize,
    urls: Vec<String>,
    css_url: bool,
}

/// Parses an opening HTML tag at the start of `s` (`<name attr="v" attr=v attr>`).
fn parse_tag(s: &str, budget: &mut usize) -> Option<Tag> {
    let b = s.as_bytes();
    let mut scanned = Scanned { budget, bytes: 0 };
    if b.first() != Some(&b'<') || !b.get(1).is_some_and(u8::is_ascii_alphabetic) {
        return None;
    }
    let mut i = 1;
    while b
        .get(i)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b':')
    {
        i += 1;
    }
    let name = s.get(1..i)?.to_ascii_lowercase();
    let mut urls = Vec::new();
    let mut css_url = false;
    loop {
        scanned.bytes = i;
        if i > CONSTRUCT_LEN_MAX {
            return None;
        }
        while b
            .get(i)
            .is_some_and(|c| c.is_ascii_whitespace() || *c == b'/')
        {
            i += 1;
        }
        match b.get(i) {
            None => return None,
            Some(b'>') => {
                return Some(Tag {
                    name,
                    len: i + 1,
                    urls,
                    css_url,
                });
            }
            _ => {}
        }
        let name_start = i;
        while b
            .get(i)
            .is_some_and(|c| !c.is_ascii_whitespace() && !matches!(c, b'=' | b'>' | b'/'))
        {
            i += 1;
        }
        let attr = s.get(name_start..i)?.to_ascii_lowercase();
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let mut value = None;
        if b.get(i) == Some(&b'=') {
            i += 1;
            while b.get(i).is_some_and(u8::is_ascii_whitespace) {
                i += 1;
            }
            match b.get(i) {
                Some(q @ (b'"' | b'\'')) => {
                    let q = *q;
                    let vstart = i + 1;
                    let vend = vstart + s.get(vstart..)?.bytes().position(|c| c == q)?;
                    value = Some(s.get(vstart..vend)?);
                    i = vend + 1;
                }
                _ => {
                    let vstart = i;
                    while b
                        .get(i)
                        .is_some_and(|c| !c.is_ascii_whitespace() && *c != b'>')
                    {
                        i += 1;
                    }
                    value = Some(s.get(vstart..i)?);
                }
            }
        }
        if name_start == i {
            // No progress: a stray character; skip it.
            i += 1;
            continue;
        }
        let Some(v) = value else { continue };
        if attr == "style" && v.to_ascii_lowercase().contains("url(") {
            css_url = true;
        } else if attr == "srcset" {
            urls.extend(
                v.split(',')
                    .filter_map(|c| c.split_whitespace().next())
                    .map(str::to_owned),
            );
        } else if URL_ATTRS.contains(&attr.as_str()) || attr.starts_with("on") {
            // Event handlers (`onerror=fetch(…)`) are code, never allowed.
            if attr.starts_with("on") {
                urls.push(String::new());
            } else if attr != "content" || v.contains("://") {
                urls.push(v.to_owned());
            }
        }
    }
}

/// Charges the bytes a parser scanned to the scan budget when it returns, on every path.
struct Scanned<'a> {
    budget: &'a mut usize,
    bytes: usize,
}

impl Drop for Scanned<'_> {
    fn drop(&mut self) {
        *self.budget = self.budget.saturating_sub(self.bytes.max(1));
    }
}

/// The index of the `]` matching the `[` at `open`, honouring nesting and backslash escapes.
fn matching_bracket(s: &str, open: usize, budget: &mut usize) -> Option<usize> {
    let b = s.as_bytes();
    let mut scanned = Scanned { budget, bytes: 0 };
    let mut depth = 0usize;
    let mut i = open;
    let limit = open.saturating_add(CONSTRUCT_LEN_MAX).min(b.len());
    while i < limit {
        scanned.bytes = i - open;
        match b.get(i)? {
            b'\\' => i += 1,
            b'[' => depth += 1,
            b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Parses `(dest "title")` at `paren` (CommonMark §6.3): the destination and the index after
/// the closing parenthesis.
fn inline_destination<'s>(
    s: &'s str,
    paren: usize,
    budget: &mut usize,
) -> Option<(&'s str, usize)> {
    let b = s.as_bytes();
    // Charged as if the whole window was read: destinations are rare, windows short.
    let _scanned = Scanned {
        budget,
        bytes: CONSTRUCT_LEN_MAX.min(s.len().saturating_sub(paren)),
    };
    let mut i = paren + 1;
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    let (dest, mut i) = if b.get(i) == Some(&b'<') {
        let start = i + 1;
        let len = s
            .get(start..)?
            .bytes()
            .take(CONSTRUCT_LEN_MAX)
            .position(|c| c == b'>' || c == b'\n')?;
        if b.get(start + len) != Some(&b'>') {
            return None;
        }
        (s.get(start..start + len)?, start + len + 1)
    } else {
        let start = i;
        let mut depth = 0usize;
        while let Some(&c) = b.get(i) {
            if i - start > CONSTRUCT_LEN_MAX {
                return None;
            }
            match c {
                b'\\' => i += 1,
                b'(' => depth += 1,
                b')' if depth == 0 => break,
                b')' => depth -= 1,
                c if c.is_ascii_whitespace() || c.is_ascii_control() => break,
                _ => {}
            }
            i += 1;
        }
        (s.get(start..i.min(b.len()))?, i)
    };
    while b.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    // Optional title.
    if let Some(&q) = b.get(i)
        && matches!(q, b'"' | b'\'' | b'(')
    {
        let close = if q == b'(' { b')' } else { q };
        let len = s
            .get(i + 1..)?
            .bytes()
            .take(CONSTRUCT_LEN_MAX)
            .position(|c| c == close)?;
        i += len + 2;
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
    }
    (b.get(i) == Some(&b')')).then_some((dest, i + 1))
}

/// CommonMark §4.7 label matching: case-fold, collapse whitespace.
fn normalize_label(label: &str) -> String {
    label
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Undoes CommonMark backslash escapes of ASCII punctuation (§2.4).
fn unescape_backslashes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&n) = chars.peek()
            && n.is_ascii_punctuation()
        {
            out.push(n);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out
}

/// Whether `s` holds an HTML character reference (`&amp;`, `&#104;`, `&#x68;`), which a
/// renderer would decode before fetching.
fn has_char_reference(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().any(|(i, c)| {
        *c == b'&' && {
            let tail = b.get(i + 1..).unwrap_or_default();
            let n = tail
                .iter()
                .take(33)
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'#')
                .count();
            n > 0 && tail.get(n) == Some(&b';')
        }
    })
}

/// GFM's autolink end rule, simplified: drop trailing punctuation and an unbalanced `)`.
fn trim_url_tail(raw: &str) -> &str {
    let mut s = raw;
    loop {
        let trimmed = s.trim_end_matches(['.', ',', ':', ';', '!', '?', '*', '_', '~', '\'', '"']);
        let trimmed = if trimmed.ends_with(')')
            && trimmed.matches('(').count() < trimmed.matches(')').count()
        {
            trimmed.get(..trimmed.len() - 1).unwrap_or(trimmed)
        } else {
            trimmed
        };
        if trimmed.len() == s.len() {
            return s;
        }
        s = trimmed;
    }
}

fn looks_like_host(s: &str) -> bool {
    let host: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':' | '@'))
        .collect();
    host.contains('.') || host.starts_with('[') || host.starts_with("localhost")
}
