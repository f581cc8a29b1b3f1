//! Prompt-injection signals: phrases and syntax common in injection attempts (OWASP LLM01,
//! the "ignore previous instructions" family, DAN-style jailbreaks, fake tool-call and chat
//! template tokens, hidden Unicode). A signal only: callers decide what it changes (extra
//! approval, an audit flag); it is no defence on its own and is easy to paraphrase around.

use std::sync::LazyLock;

use regex::RegexSet;

use crate::error::GuardError;

/// One rule: a stable id, a case-insensitive pattern and its weight in `0.0..=1.0`.
#[derive(Clone, Copy, Debug)]
pub struct InjectionRule {
    /// Stable id reported in [`InjectionSignal::rules`].
    pub id: &'static str,
    /// The pattern (Rust `regex` syntax, matched case-insensitively).
    pub pattern: &'static str,
    /// How strongly a match alone suggests an injection.
    pub weight: f32,
}

/// Score at or above which a text is worth flagging (two medium rules, or one strong one).
pub const INJECTION_SCORE_SUSPICIOUS: f32 = 0.5;

/// The rules, in reporting order.
pub const INJECTION_RULES: &[InjectionRule] = &[
    InjectionRule {
        id: "ignore-previous-instructions",
        pattern: r"\b(?:ignore|disregard|forget|override|bypass|skip)\s+(?:all\s+|any\s+|the\s+|of\s+)?(?:previous|prior|above|earlier|preceding|former|your|system|original)\s+(?:\w+\s+)?(?:instructions?|prompts?|rules|directions|guidelines|context|messages?|constraints)",
        weight: 0.8,
    },
    InjectionRule {
        id: "you-are-now",
        pattern: r"\byou\s+are\s+now\b|\bfrom\s+now\s+on,?\s+you\b|\byou\s+are\s+no\s+longer\b",
        weight: 0.5,
    },
    InjectionRule {
        id: "reveal-system-prompt",
        pattern: r"\b(?:reveal|print|show|repeat|output|display|leak|dump|tell\s+me|what\s+is|what\s+are)\b.{0,40}\b(?:system\s+prompt|initial\s+(?:prompt|instructions)|hidden\s+(?:prompt|instructions)|your\s+(?:instructions|rules|prompt)|(?:api\s+)?keys?|secrets?|credentials|passwords?|environment\s+variables)",
        weight: 0.6,
    },
    InjectionRule {
        id: "system-prompt-mention",
        pattern: r"\bsystem\s+prompt\b|\bsystem\s+message\b",
        weight: 0.3,
    },
    InjectionRule {
        id: "developer-mode",
        pattern: r"\b(?:developer|debug|god|admin)\s+mode\b|\bjailbr(?:eak|oken)\b|\bunfiltered\b|\bno\s+restrictions\b",
        weight: 0.6,
    },
    InjectionRule {
        id: "dan",
        pattern: r"(?-i:\bDAN\b)|\bdo\s+anything\s+now\b",
        weight: 0.6,
    },
    InjectionRule {
        id: "act-as",
        pattern: r"\b(?:act|behave|respond)\s+as\s+(?:if\s+you\s+(?:are|were)\s+)?(?:an?\s+|the\s+)?\w+|\bpretend\s+(?:to\s+be|you\s+are)\b|\broleplay\s+as\b",
        weight: 0.3,
    },
    InjectionRule {
        id: "role-escalation",
        pattern: r"\byou\s+are\s+(?:now\s+)?(?:an?\s+|the\s+)?(?:admin|administrator|root|superuser|finance|system)\b|\b(?:grant|give)\s+(?:me|yourself)\s+(?:admin|root|elevated|full)\b",
        weight: 0.5,
    },
    InjectionRule {
        id: "exfiltrate",
        pattern: r"\bexfiltrat\w*|\b(?:send|post|upload|forward|leak)\s+(?:it|this|that|them|the\s+\w+|all\s+\w+|everything|\w+\s+data)\s+to\s+(?:https?://|\S+@|\w+\.\w+)|\b(?:append|add|include|encode)\b.{0,40}\b(?:to|in|into)\s+(?:the|a|this)\s+(?:url|link|image|query)",
        weight: 0.7,
    },
    InjectionRule {
        id: "markdown-image-url-data",
        pattern: r"!\[[^\]]*\]\(\s*https?://[^)\s]*[?&][^)\s]*=",
        weight: 0.4,
    },
    InjectionRule {
        id: "tool-call-syntax",
        pattern: r"<\|?(?:tool_call|function_call|im_start|im_end|endoftext|system|assistant)\|?>|</?tool_call>|\[/?INST\]|<</?SYS>>|\x22(?:tool_calls|function_call)\x22\s*:|\{\s*\x22(?:name|tool|function)\x22\s*:\s*\x22\w+\x22\s*,\s*\x22(?:arguments|args|parameters|input)\x22",
        weight: 0.6,
    },
    InjectionRule {
        id: "fake-role-header",
        pattern: r"(?m)^\s*(?:#+\s*)?(?:system|assistant|developer)\s*:|\bnew\s+instructions?\s*:|\bimportant\s+(?:new\s+)?instructions?\b|\bend\s+of\s+(?:user\s+)?(?:input|prompt|instructions)\b",
        weight: 0.5,
    },
    InjectionRule {
        id: "hidden-unicode",
        pattern: r"[\x{200B}-\x{200F}\x{202A}-\x{202E}\x{2060}-\x{2064}\x{FEFF}\x{E0000}-\x{E007F}]",
        weight: 0.4,
    },
    InjectionRule {
        id: "payment-action",
        pattern: r"\b(?:issue|make|process|send|initiate|call)\s+(?:a\s+|the\s+)?(?:refund|payment|transfer|wire|charge_deposit|issue_refund|charge)\b|\brefund\s+[0-9][0-9,.]*\b",
        weight: 0.3,
    },
    InjectionRule {
        id: "do-not-tell-user",
        pattern: r"\b(?:do\s+not|don't|never)\s+(?:tell|inform|mention|reveal\s+to|alert)\s+(?:the\s+)?user\b|\bwithout\s+(?:telling|asking|informing)\s+(?:the\s+)?user\b|\bsilently\b",
        weight: 0.5,
    },
];

/// The result of scoring a text: `score` in `0.0..=1.0` is `1 − Π(1 − weight)` over the
/// rules that matched (each rule counted once), and `rules` their ids in [`INJECTION_RULES`]
/// order.
#[derive(Clone, Debug, PartialEq)]
pub struct InjectionSignal {
    /// Combined score.
    pub score: f32,
    /// Ids of the rules that matched.
    pub rules: Vec<&'static str>,
}

impl InjectionSignal {
    /// Whether `score` reaches [`INJECTION_SCORE_SUSPICIOUS`].
    #[must_use]
    pub fn is_suspicious(&self) -> bool {
        self.score >= INJECTION_SCORE_SUSPICIOUS
    }
}

static RULES: LazyLock<Result<RegexSet, GuardError>> = LazyLock::new(|| {
    RegexSet::new(INJECTION_RULES.iter().map(|r| format!("(?i){}", r.pattern)))
        .map_err(|e| GuardError::Pattern(e.to_string()))
});

/// Scores `text` against [`INJECTION_RULES`] (one pass, all rules at once).
///
/// # Errors
/// [`GuardError::Pattern`] if the built-in rules do not compile (a bug; the tests cover it).
pub fn injection_signal(text: &str) -> Result<InjectionSignal, GuardError> {
    let set = RULES.as_ref().map_err(Clone::clone)?;
    let matched = set.matches(text);
    let mut keep = 1.0f32;
    let mut rules = Vec::new();
    for (i, rule) in INJECTION_RULES.iter().enumerate() {
        if matched.matched(i) {
            keep *= 1.0 - rule.weight.clamp(0.0, 1.0);
            rules.push(rule.id);
        }
    }
    Ok(InjectionSignal {
        score: 1.0 - keep,
        rules,
    })
}
