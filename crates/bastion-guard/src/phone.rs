//! Phone number validation against libphonenumber's metadata (as shipped by the
//! `phonenumber` crate, `PhoneNumberMetadata.xml`), with regexes compiled once per region.
//!
//! Why not `phonenumber::parse` + `is_valid` directly: they go through one process-wide,
//! mutex-guarded, 100-entry regex cache that thrashes on NANP numbers (25 regions share
//! `+1`): about 40 µs per US number, which alone would cap the detector near 5 MB/s on
//! number-dense text. The rule is libphonenumber's `isValidNumber`: the national significant
//! number (NSN) matches the region's general descriptor and at least one number-type
//! descriptor (fixed line, mobile, toll free, …), each with its possible lengths.

use std::collections::HashMap;
use std::sync::OnceLock;

use phonenumber::metadata::{DATABASE, Descriptor, Metadata};
use regex::{Regex, RegexBuilder};

/// Compiled size limit per metadata pattern (bytes); the largest (US fixed line) fits.
const PATTERN_SIZE_MAX: usize = 64 * 1024 * 1024;

/// One descriptor: anchored pattern and possible lengths (empty: any).
struct Desc {
    pattern: Regex,
    lengths: Vec<u16>,
}

impl Desc {
    fn from(d: &Descriptor) -> Option<Desc> {
        // The metadata keeps the XML's layout whitespace: compile in verbose mode.
        let pattern = RegexBuilder::new(&format!("^(?:{})$", d.national_number().as_str()))
            .ignore_whitespace(true)
            .size_limit(PATTERN_SIZE_MAX)
            .build()
            .ok()?;
        Some(Desc {
            pattern,
            lengths: d.possible_length().to_vec(),
        })
    }

    fn matches(&self, nsn: &str) -> bool {
        let len = u16::try_from(nsn.len()).unwrap_or(u16::MAX);
        (self.lengths.is_empty() || self.lengths.contains(&len)) && self.pattern.is_match(nsn)
    }
}

/// A region's compiled plan.
struct Plan {
    general: Desc,
    types: Vec<Desc>,
    national_prefix: Option<String>,
}

impl Plan {
    fn from(meta: &Metadata) -> Option<Plan> {
        let d = meta.descriptors();
        let types = [
            d.fixed_line(),
            d.mobile(),
            d.toll_free(),
            d.premium_rate(),
            d.shared_cost(),
            d.personal_number(),
            d.voip(),
            d.pager(),
            d.uan(),
            d.voicemail(),
        ]
        .into_iter()
        .flatten()
        .filter_map(Desc::from)
        .collect();
        Some(Plan {
            general: Desc::from(d.general())?,
            types,
            national_prefix: meta.national_prefix().map(str::to_owned),
        })
    }

    fn valid_nsn(&self, nsn: &str) -> bool {
        self.general.matches(nsn) && self.types.iter().any(|t| t.matches(nsn))
    }
}

/// All regions of the metadata, compiled lazily.
pub(crate) struct PhonePlans {
    regions: HashMap<String, (u16, OnceLock<Option<Plan>>)>,
    by_code: HashMap<u16, Vec<String>>,
}

impl std::fmt::Debug for PhonePlans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhonePlans")
            .field("regions", &self.regions.len())
            .finish()
    }
}

impl PhonePlans {
    pub(crate) fn new() -> Self {
        let mut regions = HashMap::new();
        let mut by_code: HashMap<u16, Vec<(bool, String)>> = HashMap::new();
        for meta in DATABASE.iter() {
            regions.insert(meta.id().to_owned(), (meta.country_code(), OnceLock::new()));
            by_code
                .entry(meta.country_code())
                .or_default()
                .push((!meta.is_main_country_for_code(), meta.id().to_owned()));
        }
        // The main region of a shared code first (US for +1, GB for +44): most numbers are
        // decided by the first plan tried.
        let by_code = by_code
            .into_iter()
            .map(|(code, mut ids)| {
                ids.sort();
                (code, ids.into_iter().map(|(_, id)| id).collect())
            })
            .collect();
        PhonePlans { regions, by_code }
    }

    fn plan(&self, region: &str) -> Option<&Plan> {
        let (_, cell) = self.regions.get(region)?;
        cell.get_or_init(|| DATABASE.by_id(region).and_then(Plan::from))
            .as_ref()
    }

    /// Whether `nsn` is valid in any region using country code `code`.
    fn valid_for_code(&self, code: u16, nsn: &str) -> bool {
        self.by_code.get(&code).is_some_and(|ids| {
            ids.iter()
                .any(|id| self.plan(id).is_some_and(|p| p.valid_nsn(nsn)))
        })
    }

    /// An international number: `digits` are everything after `+` (country code first).
    pub(crate) fn valid_international(&self, digits: &str) -> bool {
        (1..=3).any(|n| {
            let (Some(cc), Some(nsn)) = (digits.get(..n), digits.get(n..)) else {
                return false;
            };
            let Ok(code) = cc.parse::<u16>() else {
                return false;
            };
            self.by_code.contains_key(&code) && self.valid_for_code(code, nsn)
        })
    }

    /// A national number written as dialled inside `region` (`digits` may start with the
    /// region's national prefix, e.g. the trunk `0`). Valid in any region sharing the
    /// country code (a Canadian number dialled in the US is valid).
    pub(crate) fn valid_national(&self, region: &str, digits: &str) -> bool {
        let Some((code, _)) = self.regions.get(region) else {
            return false;
        };
        let plan = self.plan(region);
        let stripped = plan
            .and_then(|p| p.national_prefix.as_deref())
            .and_then(|np| digits.strip_prefix(np));
        stripped.is_some_and(|nsn| self.valid_for_code(*code, nsn))
            || self.valid_for_code(*code, digits)
    }
}
