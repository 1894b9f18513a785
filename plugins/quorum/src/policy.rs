//! The `quorum` approval policy: n-of-m approval stages, auto-approve rules and break-glass.
//!
//! This file is pure and self-contained: it uses only `std`, `serde`, `serde_json` and `jiff`,
//! and its own plain types (no wit-bindgen types), so the server's benchmark can include it
//! natively with `#[path = "../plugins/quorum/src/policy.rs"] mod policy;`. Keep it that way: no
//! `crate::` or `super::` paths, no clock (`now` is always passed in). Tests: `tests/policy.rs`.
//!
//! # Settings
//!
//! ```json
//! {
//!   "stages": [
//!     { "name": "team lead", "users": ["bob"], "groups": ["leads", "managers"], "count": 1 },
//!     { "name": "security", "groups": ["security"], "count": 2 }
//!   ],
//!   "auto_approve": [
//!     { "name": "sre on hours", "requester_groups": ["sre"],
//!       "window": { "time_zone": "Europe/Paris", "days": ["mon","tue","wed","thu","fri"],
//!                   "from": "09:00", "to": "18:00" },
//!       "max_duration": "1h" }
//!   ],
//!   "break_glass": { "enabled": true, "min_justification_chars": 20 }
//! }
//! ```
//!
//! - `stages` (all must be satisfied): `name` (default `stage <n>`, 1-based), `users` (principal
//!   ids) and/or `groups` (any of them), `count` distinct approvals (default 1; without groups, at
//!   most the number of distinct users). May be left out or empty only if `auto_approve` is not.
//! - `auto_approve` (first match wins): `name` (default `rule <index>`, 0-based), and optional
//!   conditions that must all hold: `requester_groups` (requester in any), `window` (all four
//!   fields required: an IANA `time_zone`; `days`, `mon`..`sun` or full English names, any case;
//!   `from` and `to` as `HH:MM`, local time in `[from, to)`, `to` may be `24:00`, `from < to`),
//!   `max_duration` (`"90s"`, `"30m"`, `"2h30m"`, `"1d"` or seconds; the requested duration must
//!   be at most this, and action requests never match).
//! - `break_glass`: `enabled` (default false), `min_justification_chars` (default 20).
//!
//! Unknown or repeated fields and wrong types are errors; `null` is the same as leaving an
//! optional field out. Every error is reported, with its path (e.g. `stages[1].count`).
//!
//! # Decision, in order
//!
//! 1. The first auto-approve rule whose conditions all hold approves.
//! 2. With no stage, the request is denied.
//! 3. Only each reviewer's latest review counts; the requester's own never counts toward a stage.
//! 4. A deny by a reviewer eligible for any stage denies.
//! 5. All stages satisfied (each by `count` distinct approvers, one approver counting toward at
//!    most one stage, assigned by maximum matching) approves.
//! 6. Break-glass, when enabled: the requester's own latest review approves and the trimmed
//!    justification has at least `min_justification_chars` characters: approved, flagged as
//!    break-glass (only when the stages alone do not approve, so the flag means the approval
//!    relies on it).
//! 7. Otherwise the request is pending, with every stage's progress.

// Not every item is used by every includer (the plugin glue, the server's benchmark).
#![allow(dead_code)]

use std::borrow::Cow;
use std::fmt;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

// ---------------------------------------------------------------------------------------------
// Inputs and outputs
// ---------------------------------------------------------------------------------------------

/// A person (or workload): its stable id and its groups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Principal {
    pub id: String,
    pub groups: Vec<String>,
}

/// The request being decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    pub requester: Principal,
    /// The requested access duration; `None` for an action request.
    pub duration_seconds: Option<u64>,
    pub justification: String,
}

/// One review, as given (oldest first in the slice passed to [`evaluate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub reviewer: Principal,
    /// `true` for approve, `false` for deny.
    pub approve: bool,
    pub comment: Option<String>,
}

/// A precise complaint about the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    /// Where in the settings JSON, e.g. `stages[1].count` (empty for the whole document).
    pub path: String,
    /// What is wrong and what would be right.
    pub message: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A stage's progress, as reported while a request is pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub name: String,
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub needed: u32,
    /// The approvers counted toward this stage, in review order.
    pub approved_by: Vec<String>,
}

/// What the policy concludes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Approve { reason: String, break_glass: bool },
    Deny(String),
    Pending(Vec<Requirement>),
}

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

/// Validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// All must be satisfied (AND).
    pub stages: Vec<Stage>,
    /// Checked in order; the first that matches approves.
    pub auto_approve: Vec<AutoApproveRule>,
    pub break_glass: BreakGlass,
}

/// A group of people of whom `count` must approve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Defaults to `stage <n>` (1-based).
    pub name: String,
    pub users: Vec<String>,
    pub groups: Vec<String>,
    /// At least 1; defaults to 1.
    pub count: u32,
}

/// Approve without review when every present condition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoApproveRule {
    /// Defaults to `rule <index>` (0-based, as in `auto_approve[<index>]`).
    pub name: String,
    /// The requester must be in at least one of these groups.
    pub requester_groups: Option<Vec<String>>,
    /// `now` must fall inside this weekly window.
    pub window: Option<Window>,
    /// The requested duration must be at most this; action requests never match.
    pub max_duration_seconds: Option<u64>,
}

/// A weekly time window in an IANA time zone: on `days`, local time in `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// An IANA time zone name from jiff's bundled database; its data is only loaded when the
    /// window is checked (jiff caches it for the life of the process or instance).
    pub time_zone: String,
    /// Bit `i` set for weekday `i`, Monday = 0 ... Sunday = 6.
    pub days: u8,
    /// Minutes after local midnight, 0..=1439.
    pub from_minute: u32,
    /// Minutes after local midnight, `from_minute + 1 ..= 1440`.
    pub to_minute: u32,
}

/// Self-approval by the requester in an emergency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlass {
    /// Defaults to `false`.
    pub enabled: bool,
    /// Characters of trimmed justification required; at least 1, defaults to 20.
    pub min_justification_chars: u32,
}

impl Default for BreakGlass {
    fn default() -> Self {
        BreakGlass {
            enabled: false,
            min_justification_chars: DEFAULT_MIN_JUSTIFICATION_CHARS,
        }
    }
}

/// The default for `break_glass.min_justification_chars`.
pub const DEFAULT_MIN_JUSTIFICATION_CHARS: u32 = 20;

/// The denial given when there is no stage and no auto-approve rule applies.
pub const NO_STAGE_DENIAL: &str = "no approval stage matches and no auto-approve rule applies";

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

/// Decide a request, or say what is still needed. Pure: the same input gives the same outcome.
pub fn evaluate(settings: &Settings, req: &Request, reviews: &[Review], now_ms: i64) -> Outcome {
    // 1. Auto-approve rules, in order.
    for rule in &settings.auto_approve {
        if rule.matches(req, now_ms) {
            return Outcome::Approve {
                reason: format!("auto-approved by rule '{}'", rule.name),
                break_glass: false,
            };
        }
    }

    // 2. Nobody could ever approve.
    if settings.stages.is_empty() {
        return Outcome::Deny(NO_STAGE_DENIAL.to_string());
    }

    // 3. The latest review of each reviewer, in review order; the requester's set apart.
    let requester = req.requester.id.as_str();
    let (latest, own) = latest_reviews(reviews, requester);
    let stages = &settings.stages;

    // 4. A deny by an eligible reviewer.
    for r in &latest {
        if !r.approve && stages.iter().any(|s| s.is_eligible(&r.reviewer)) {
            return Outcome::Deny(match r.comment.as_deref().map(str::trim) {
                Some(c) if !c.is_empty() => format!("denied by {}: {}", r.reviewer.id, c),
                _ => format!("denied by {}", r.reviewer.id),
            });
        }
    }

    // 5. Assign approvers to stages (each approver to at most one stage).
    let approvers: Vec<&Review> = latest.into_iter().filter(|r| r.approve).collect();
    let assigned = assign(stages, &approvers);
    if assigned
        .iter()
        .zip(stages)
        .all(|(a, s)| a.len() == s.count as usize)
    {
        let n = stages.len();
        return Outcome::Approve {
            reason: format!("{n} of {n} stages satisfied"),
            break_glass: false,
        };
    }

    // 6. Break-glass.
    if own.is_some_and(|r| r.approve) && break_glass_justified(&settings.break_glass, req) {
        return Outcome::Approve {
            reason: format!("break-glass: self-approved by {requester}"),
            break_glass: true,
        };
    }

    // 7. Pending.
    Outcome::Pending(
        stages
            .iter()
            .zip(assigned)
            .map(|(s, a)| Requirement {
                name: s.name.clone(),
                users: s.users.clone(),
                groups: s.groups.clone(),
                needed: s.count,
                approved_by: a
                    .into_iter()
                    .map(|i| approvers[i].reviewer.id.clone())
                    .collect(),
            })
            .collect(),
    )
}

/// True when break-glass is enabled and the requester's latest review approves their own request,
/// but the justification is too short for it to count (the self-approval is then ignored).
pub fn break_glass_too_short(settings: &Settings, req: &Request, reviews: &[Review]) -> bool {
    settings.break_glass.enabled
        && reviews
            .iter()
            .rev()
            .find(|r| r.reviewer.id == req.requester.id)
            .is_some_and(|r| r.approve)
        && !break_glass_justified(&settings.break_glass, req)
}

fn break_glass_justified(bg: &BreakGlass, req: &Request) -> bool {
    bg.enabled && req.justification.trim().chars().count() >= bg.min_justification_chars as usize
}

/// Each reviewer's latest review other than the requester's, in review order, and the requester's
/// own latest review.
fn latest_reviews<'a>(
    reviews: &'a [Review],
    requester: &str,
) -> (Vec<&'a Review>, Option<&'a Review>) {
    let mut latest: Vec<&Review> = Vec::with_capacity(reviews.len());
    let mut own = None;
    for r in reviews.iter().rev() {
        let id = r.reviewer.id.as_str();
        if id == requester {
            if own.is_none() {
                own = Some(r);
            }
        } else if !latest.iter().any(|l| l.reviewer.id == id) {
            latest.push(r);
        }
    }
    latest.reverse();
    (latest, own)
}

impl Stage {
    /// Whether `p` may approve this stage: listed as a user, or a member of any listed group.
    pub fn is_eligible(&self, p: &Principal) -> bool {
        self.users.contains(&p.id) || self.groups.iter().any(|g| p.groups.contains(g))
    }
}

/// A maximum assignment of approvers (indices into `approvers`) to stages, each stage taking at
/// most `count` approvers and each approver counting toward at most one stage. Found with
/// augmenting paths, so every stage is filled whenever any assignment could fill them all. Each
/// stage's list is in review order.
fn assign(stages: &[Stage], approvers: &[&Review]) -> Vec<Vec<usize>> {
    let n_stages = stages.len();
    let mut assigned: Vec<Vec<usize>> = vec![Vec::new(); n_stages];
    if approvers.is_empty() {
        return assigned;
    }
    let eligible: Vec<bool> = approvers
        .iter()
        .flat_map(|r| stages.iter().map(|s| s.is_eligible(&r.reviewer)))
        .collect();
    let mut missing: usize = stages.iter().map(|s| s.count as usize).sum();
    let mut visited = vec![false; n_stages];
    let mut m = Matching {
        stages,
        eligible: &eligible,
        assigned: &mut assigned,
        visited: &mut visited,
    };
    for u in 0..approvers.len() {
        if missing == 0 {
            break;
        }
        if !m.eligible[u * n_stages..(u + 1) * n_stages].contains(&true) {
            continue;
        }
        m.visited.fill(false);
        if m.augment(u) {
            missing -= 1;
        }
    }
    for a in &mut assigned {
        a.sort_unstable();
    }
    assigned
}

/// The state of one run of [`assign`].
struct Matching<'a> {
    stages: &'a [Stage],
    /// `eligible[u * stages.len() + j]`: whether approver `u` may approve stage `j`.
    eligible: &'a [bool],
    /// The approvers counted toward each stage.
    assigned: &'a mut [Vec<usize>],
    /// The stages already tried in the current search for an augmenting path.
    visited: &'a mut [bool],
}

impl Matching<'_> {
    /// Find room for approver `u`, moving already-assigned approvers to other stages if needed.
    fn augment(&mut self, u: usize) -> bool {
        let n = self.stages.len();
        for j in 0..n {
            if !self.eligible[u * n + j] || self.visited[j] {
                continue;
            }
            self.visited[j] = true;
            if self.assigned[j].len() < self.stages[j].count as usize {
                self.assigned[j].push(u);
                return true;
            }
            for k in 0..self.assigned[j].len() {
                let v = self.assigned[j][k];
                if self.augment(v) {
                    self.assigned[j][k] = u;
                    return true;
                }
            }
        }
        false
    }
}

impl AutoApproveRule {
    /// Whether every present condition holds (a rule without conditions matches everything).
    pub fn matches(&self, req: &Request, now_ms: i64) -> bool {
        if let Some(groups) = &self.requester_groups
            && !req.requester.groups.iter().any(|g| groups.contains(g))
        {
            return false;
        }
        if let Some(max) = self.max_duration_seconds {
            match req.duration_seconds {
                Some(d) if d <= max => {}
                _ => return false,
            }
        }
        if let Some(w) = &self.window
            && !w.contains(now_ms)
        {
            return false;
        }
        true
    }
}

impl Window {
    /// Whether the instant `now_ms` (ms since the Unix epoch) falls inside the window.
    pub fn contains(&self, now_ms: i64) -> bool {
        // An unknown zone (only possible with `parse_settings_for_evaluation`) never matches.
        let (Ok(ts), Ok(tz)) = (
            Timestamp::from_millisecond(now_ms),
            TimeZone::get(&self.time_zone),
        ) else {
            return false;
        };
        let local = tz.to_datetime(ts);
        let day = local.weekday().to_monday_zero_offset() as u32;
        if self.days & (1 << day) == 0 {
            return false;
        }
        let secs = local.hour() as u32 * 3600 + local.minute() as u32 * 60 + local.second() as u32;
        self.from_minute * 60 <= secs && secs < self.to_minute * 60
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing and validation
// ---------------------------------------------------------------------------------------------

/// Parse and validate settings, collecting every error.
pub fn parse_settings(json: &str) -> Result<Settings, Vec<SettingError>> {
    parse(json, true)
}

/// Like [`parse_settings`], but without loading each window's time zone to check its name, which
/// is the costly part of parsing: time zone data is then only loaded if a window is actually
/// checked, and a window in an unknown time zone never matches (fails closed). For evaluating
/// settings that [`validate`] has already accepted.
pub fn parse_settings_for_evaluation(json: &str) -> Result<Settings, Vec<SettingError>> {
    parse(json, false)
}

/// Check settings, collecting every error.
pub fn validate(json: &str) -> Result<(), Vec<SettingError>> {
    parse_settings(json).map(|_| ())
}

fn parse(json: &str, check_time_zones: bool) -> Result<Settings, Vec<SettingError>> {
    let mut p = Parser {
        errors: Vec::new(),
        check_time_zones,
    };
    let mut de = serde_json::Deserializer::from_str(json);
    let root = Path::Root;
    let got = At {
        p: &mut p,
        path: &root,
        kind: SettingsKind,
    }
    .deserialize(&mut de)
    .and_then(|got| de.end().map(|()| got));
    let got = match got {
        Ok(got) => got,
        Err(e) => {
            return Err(vec![SettingError {
                path: String::new(),
                message: format!("the settings are not valid JSON: {e}"),
            }]);
        }
    };
    match p.not_null(&root, got, "an object") {
        Some(settings) if p.errors.is_empty() => Ok(settings),
        _ => Err(p.errors),
    }
}

/// Parse a duration: `"90s"`, `"30m"`, `"1h"`, `"2h30m"`, `"1d"` (units `d`, `h`, `m`, `s`, each
/// at most once, largest first). Zero is accepted here; callers decide.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    const UNITS: [(u8, u64); 4] = [(b'd', 86_400), (b'h', 3_600), (b'm', 60), (b's', 1)];
    let bad = || {
        format!(
            "`{s}` is not a duration: expected a number of seconds or a string of numbers with \
             units d, h, m, s, largest first, e.g. \"90s\", \"30m\", \"2h30m\", \"1d\""
        )
    };
    let too_long = || format!("`{s}` is too long a duration");
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut next_unit = 0; // index in UNITS of the largest unit still allowed
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let mut n: u64 = 0;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            let digit = (bytes[i] - b'0') as u64;
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(digit))
                .ok_or_else(too_long)?;
            i += 1;
        }
        if i == start || i == bytes.len() {
            return Err(bad());
        }
        let unit = bytes[i].to_ascii_lowercase();
        match UNITS.iter().position(|(u, _)| *u == unit) {
            Some(k) if k >= next_unit => {
                next_unit = k + 1;
                total = n
                    .checked_mul(UNITS[k].1)
                    .and_then(|v| total.checked_add(v))
                    .ok_or_else(too_long)?;
            }
            _ => return Err(bad()),
        }
        i += 1;
    }
    Ok(total)
}

/// Parse `HH:MM` (24-hour) into minutes after midnight; `24:00` (1440) only when `allow_24`.
fn parse_time(s: &str, allow_24: bool) -> Result<u32, String> {
    let b = s.as_bytes();
    let ok = b.len() == 5 && b[2] == b':' && [0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit());
    let expected = if allow_24 {
        "expected a 24-hour time as HH:MM, e.g. \"18:00\" (\"24:00\" is the end of the day)"
    } else {
        "expected a 24-hour time as HH:MM from \"00:00\" to \"23:59\", e.g. \"09:00\""
    };
    if !ok {
        return Err(format!("`{s}` is not a time: {expected}"));
    }
    let h = (b[0] - b'0') as u32 * 10 + (b[1] - b'0') as u32;
    let m = (b[3] - b'0') as u32 * 10 + (b[4] - b'0') as u32;
    if h == 24 && m == 0 {
        return if allow_24 {
            Ok(1440)
        } else {
            Err(format!("`{s}` is only allowed for `to`: {expected}"))
        };
    }
    if h > 23 || m > 59 {
        return Err(format!("`{s}` is not a valid time: {expected}"));
    }
    Ok(h * 60 + m)
}

const DAY_NAMES: [(&str, &str); 7] = [
    ("mon", "monday"),
    ("tue", "tuesday"),
    ("wed", "wednesday"),
    ("thu", "thursday"),
    ("fri", "friday"),
    ("sat", "saturday"),
    ("sun", "sunday"),
];

/// Monday = 0 ... Sunday = 6; short or full English names, any case.
fn parse_day(s: &str) -> Option<u8> {
    DAY_NAMES
        .iter()
        .position(|(short, long)| s.eq_ignore_ascii_case(short) || s.eq_ignore_ascii_case(long))
        .map(|i| i as u8)
}

/// A location in the settings, only turned into text when there is an error to report.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    fn key(&'a self, key: &'a str) -> Path<'a> {
        Path::Key(self, key)
    }

    fn index(&'a self, i: usize) -> Path<'a> {
        Path::Index(self, i)
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(Path::Root, key) => f.write_str(key),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

// The settings are read in one pass straight from the JSON text, without building a tree of
// values first (that tree would cost more than everything else together). Scalars are read by
// one visitor and then checked by plain functions; arrays and objects by a `Container`. A value of
// the wrong JSON type is reported, with its path, and skipped, so one mistake hides no other.

/// The outcome of reading one value. Errors are recorded in the `Parser`.
enum Got<T> {
    /// `null`: absent for an optional field, a wrong type elsewhere.
    Null,
    /// Invalid; already reported.
    Bad,
    Ok(T),
}

impl<T> Got<T> {
    /// The value of an optional field: `Ok(None)` when absent, `Err(())` when invalid.
    fn optional(self) -> Result<Option<T>, ()> {
        match self {
            Got::Null => Ok(None),
            Got::Bad => Err(()),
            Got::Ok(v) => Ok(Some(v)),
        }
    }
}

/// Records errors while reading.
struct Parser {
    errors: Vec<SettingError>,
    check_time_zones: bool,
}

impl Parser {
    fn error(&mut self, path: &Path, message: impl Into<String>) {
        self.errors.push(SettingError {
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn wrong_type<T>(&mut self, path: &Path, expected: &str, found: impl fmt::Display) -> Got<T> {
        self.error(path, format!("expected {expected}, found {found}"));
        Got::Bad
    }

    /// Reports `null` where a value is required.
    fn not_null<T>(&mut self, path: &Path, got: Got<T>, expected: &str) -> Option<T> {
        match got {
            Got::Ok(v) => Some(v),
            Got::Bad => None,
            Got::Null => {
                self.wrong_type::<()>(path, expected, "null");
                None
            }
        }
    }

    /// The value of a required field of the object at `path`, reporting it when absent.
    fn required<T>(&mut self, path: &Path, key: &str, got: Got<T>, hint: &str) -> Option<T> {
        match got {
            Got::Ok(v) => Some(v),
            Got::Bad => None,
            Got::Null => {
                self.error(&path.key(key), format!("is required: {hint}"));
                None
            }
        }
    }
}

// --- Scalars ---------------------------------------------------------------------------------

/// A JSON scalar; strings are borrowed from the settings text when they have no escapes.
enum Scalar<'de> {
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(Cow<'de, str>),
}

impl fmt::Display for Scalar<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "the boolean {b}"),
            Scalar::U64(n) => write!(f, "the number {n}"),
            Scalar::I64(n) => write!(f, "the number {n}"),
            Scalar::F64(n) => write!(f, "the number {n}"),
            Scalar::Str(s) => write!(f, "the string \"{s}\""),
        }
    }
}

/// Reads a scalar at `path`; an array or object there is reported as not `expected`.
struct ScalarAt<'p, 'a> {
    p: &'p mut Parser,
    path: &'a Path<'a>,
    expected: &'static str,
}

impl<'de> DeserializeSeed<'de> for ScalarAt<'_, '_> {
    type Value = Got<Scalar<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarAt<'_, '_> {
    type Value = Got<Scalar<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expected)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Got::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Got::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Got::Ok(Scalar::Bool(b)))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Got::Ok(Scalar::U64(n)))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Got::Ok(Scalar::I64(n)))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
        Ok(Got::Ok(Scalar::F64(n)))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Got::Ok(Scalar::Str(Cow::Borrowed(s))))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Got::Ok(Scalar::Str(Cow::Owned(s.to_string()))))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(self.p.wrong_type(self.path, self.expected, "an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(self.p.wrong_type(self.path, self.expected, "an object"))
    }
}

/// Checks a scalar with `f`; `null` and invalid values pass through.
fn scalar<'de, T>(got: Got<Scalar<'de>>, f: impl FnOnce(Scalar<'de>) -> Got<T>) -> Got<T> {
    match got {
        Got::Null => Got::Null,
        Got::Bad => Got::Bad,
        Got::Ok(s) => f(s),
    }
}

const A_STRING: &str = "a string";
const POSITIVE: &str = "a whole number of at least 1";
const BOOLEAN: &str = "a boolean (true or false)";
const DURATION: &str =
    "a duration such as \"90s\", \"30m\", \"1h\", \"2h30m\", \"1d\" or a whole number of seconds";
const TIME: &str = "a string (a 24-hour time as HH:MM, e.g. \"09:00\")";
const ZONE: &str = "a string (an IANA time zone name such as \"Europe/Paris\")";
const DAY: &str = "a day name such as \"mon\"";
const DAYS: &str = "an array of days such as [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]";

/// A non-blank string (an element of `users`, `groups`, `requester_groups`).
fn non_blank(p: &mut Parser, path: &Path, s: Scalar) -> Got<String> {
    match s {
        Scalar::Str(s) if s.trim().is_empty() => {
            p.error(path, "must not be an empty string");
            Got::Bad
        }
        Scalar::Str(s) => Got::Ok(s.into_owned()),
        s => p.wrong_type(path, A_STRING, s),
    }
}

/// A stage or rule name: non-blank.
fn name(p: &mut Parser, path: &Path, s: Scalar, default: impl FnOnce() -> String) -> Got<String> {
    match s {
        Scalar::Str(s) if s.trim().is_empty() => {
            let default = default();
            p.error(
                path,
                format!("must not be empty; omit it to use the default name \"{default}\""),
            );
            Got::Bad
        }
        Scalar::Str(s) => Got::Ok(s.into_owned()),
        s => p.wrong_type(path, A_STRING, s),
    }
}

/// A whole number of at least 1 that fits in a `u32`.
fn positive(p: &mut Parser, path: &Path, s: Scalar) -> Got<u32> {
    match s {
        Scalar::U64(0) => p.error(path, "must be at least 1, found 0"),
        Scalar::U64(n) => match u32::try_from(n) {
            Ok(n) => return Got::Ok(n),
            Err(_) => p.error(path, format!("{n} is too large: at most {}", u32::MAX)),
        },
        Scalar::I64(n) => p.error(path, format!("must be at least 1, found {n}")),
        s => return p.wrong_type(path, POSITIVE, s),
    }
    Got::Bad
}

fn boolean(p: &mut Parser, path: &Path, s: Scalar) -> Got<bool> {
    match s {
        Scalar::Bool(b) => Got::Ok(b),
        s => p.wrong_type(path, BOOLEAN, s),
    }
}

/// `max_duration`: a duration string or a number of seconds, more than zero.
fn max_duration(p: &mut Parser, path: &Path, s: Scalar) -> Got<u64> {
    let secs = match s {
        Scalar::Str(s) => match parse_duration(&s) {
            Ok(secs) => secs,
            Err(e) => {
                p.error(path, e);
                return Got::Bad;
            }
        },
        Scalar::U64(n) => n,
        Scalar::I64(_) | Scalar::F64(_) => {
            return p.wrong_type(
                path,
                &format!("{DURATION} greater than zero"),
                format_args!("{s}"),
            );
        }
        s => return p.wrong_type(path, DURATION, s),
    };
    if secs == 0 {
        p.error(
            path,
            format!("must be longer than zero: expected {DURATION}"),
        );
        return Got::Bad;
    }
    Got::Ok(secs)
}

/// `from` or `to`: minutes after midnight.
fn time(p: &mut Parser, path: &Path, s: Scalar, allow_24: bool) -> Got<u32> {
    match s {
        Scalar::Str(s) => match parse_time(&s, allow_24) {
            Ok(m) => Got::Ok(m),
            Err(e) => {
                p.error(path, e);
                Got::Bad
            }
        },
        s => p.wrong_type(path, TIME, s),
    }
}

/// `time_zone`: an IANA name, checked against jiff's bundled database unless told not to.
fn zone(p: &mut Parser, path: &Path, s: Scalar) -> Got<String> {
    match s {
        Scalar::Str(name) if p.check_time_zones && TimeZone::get(&name).is_err() => {
            p.error(
                path,
                format!(
                    "unknown time zone \"{name}\": expected an IANA time zone name such as \
                     \"Europe/Paris\", \"America/New_York\" or \"UTC\""
                ),
            );
            Got::Bad
        }
        Scalar::Str(name) => Got::Ok(name.into_owned()),
        s => p.wrong_type(path, ZONE, s),
    }
}

/// One day: Monday = 0 ... Sunday = 6.
fn day(p: &mut Parser, path: &Path, s: Scalar) -> Got<u8> {
    match s {
        Scalar::Str(s) => match parse_day(&s) {
            Some(d) => Got::Ok(d),
            None => {
                p.error(
                    path,
                    format!(
                        "unknown day \"{s}\": expected one of mon, tue, wed, thu, fri, sat, sun \
                         (or the full English name)"
                    ),
                );
                Got::Bad
            }
        },
        s => p.wrong_type(path, DAY, s),
    }
}

// --- Arrays and objects ----------------------------------------------------------------------

/// An array or object to read. A scalar in its place is reported as not `expected()`.
trait Container: Sized {
    type Out;

    /// What is expected, for messages.
    fn expected(&self) -> &'static str;

    fn seq<'de, A: SeqAccess<'de>>(
        self,
        p: &mut Parser,
        path: &Path,
        mut seq: A,
    ) -> Result<Got<Self::Out>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(p.wrong_type(path, self.expected(), "an array"))
    }

    fn map<'de, A: MapAccess<'de>>(
        self,
        p: &mut Parser,
        path: &Path,
        mut map: A,
    ) -> Result<Got<Self::Out>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(p.wrong_type(path, self.expected(), "an object"))
    }
}

/// Reads the container `K` at `path`.
struct At<'p, 'a, K> {
    p: &'p mut Parser,
    path: &'a Path<'a>,
    kind: K,
}

impl<'de, K: Container> DeserializeSeed<'de> for At<'_, '_, K> {
    type Value = Got<K::Out>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, K: Container> Visitor<'de> for At<'_, '_, K> {
    type Value = Got<K::Out>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.expected())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Got::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Got::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(self
            .p
            .wrong_type(self.path, self.kind.expected(), Scalar::Bool(b)))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(self
            .p
            .wrong_type(self.path, self.kind.expected(), Scalar::U64(n)))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(self
            .p
            .wrong_type(self.path, self.kind.expected(), Scalar::I64(n)))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
        Ok(self
            .p
            .wrong_type(self.path, self.kind.expected(), Scalar::F64(n)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(self.p.wrong_type(
            self.path,
            self.kind.expected(),
            Scalar::Str(Cow::Borrowed(s)),
        ))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.kind.seq(self.p, self.path, seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.kind.map(self.p, self.path, map)
    }
}

/// Reads an object key: the index of a known key, or the unknown key itself.
struct KeySeed(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Result<usize, String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Result<usize, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(self
            .0
            .iter()
            .position(|k| *k == s)
            .ok_or_else(|| s.to_string()))
    }
}

/// Reads an object's entries: reports unknown and repeated keys, and hands each known key (by
/// index in `known`, with its path) to `value`, which must read its value.
fn fields<'de, A: MapAccess<'de>>(
    p: &mut Parser,
    path: &Path,
    mut map: A,
    known: &'static [&'static str],
    mut value: impl FnMut(&mut Parser, &Path, usize, &mut A) -> Result<(), A::Error>,
) -> Result<(), A::Error> {
    let mut seen = 0u32;
    while let Some(key) = map.next_key_seed(KeySeed(known))? {
        match key {
            Ok(i) if seen & (1 << i) == 0 => {
                seen |= 1 << i;
                value(p, &path.key(known[i]), i, &mut map)?;
            }
            Ok(i) => {
                p.error(
                    &path.key(known[i]),
                    "is given more than once; keep only one",
                );
                map.next_value::<IgnoredAny>()?;
            }
            Err(key) => {
                let list = known
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                p.error(
                    &path.key(&key),
                    format!("unknown field `{key}`; expected one of {list}"),
                );
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(())
}

/// Reads an array's scalars, handing each (with its path) to `element`.
fn scalars<'de, A: SeqAccess<'de>>(
    p: &mut Parser,
    path: &Path,
    mut seq: A,
    expected: &'static str,
    mut element: impl FnMut(&mut Parser, &Path, Got<Scalar<'de>>),
) -> Result<(), A::Error> {
    let mut i = 0;
    loop {
        let path = path.index(i);
        let Some(got) = seq.next_element_seed(ScalarAt {
            p,
            path: &path,
            expected,
        })?
        else {
            return Ok(());
        };
        element(p, &path, got);
        i += 1;
    }
}

/// A list of non-blank strings.
struct StrList;

impl Container for StrList {
    type Out = Vec<String>;

    fn expected(&self) -> &'static str {
        "an array of strings"
    }

    fn seq<'de, A: SeqAccess<'de>>(
        self,
        p: &mut Parser,
        path: &Path,
        seq: A,
    ) -> Result<Got<Vec<String>>, A::Error> {
        let mut out = Vec::new();
        let mut ok = true;
        scalars(p, path, seq, A_STRING, |p, path, got| {
            let got = scalar(got, |s| non_blank(p, path, s));
            match p.not_null(path, got, A_STRING) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        })?;
        Ok(if ok { Got::Ok(out) } else { Got::Bad })
    }
}

/// `days`: a non-empty set of days, as a bit set (Monday = bit 0).
struct Days;

impl Container for Days {
    type Out = u8;

    fn expected(&self) -> &'static str {
        DAYS
    }

    fn seq<'de, A: SeqAccess<'de>>(
        self,
        p: &mut Parser,
        path: &Path,
        seq: A,
    ) -> Result<Got<u8>, A::Error> {
        let mut days = 0u8;
        let mut ok = true;
        let mut any = false;
        scalars(p, path, seq, DAY, |p, path, got| {
            any = true;
            let got = scalar(got, |s| day(p, path, s));
            match p.not_null(path, got, DAY) {
                Some(d) if days & (1 << d) != 0 => {
                    let day = DAY_NAMES[d as usize].1;
                    p.error(
                        path,
                        format!("repeats {day}, already listed; list each day once"),
                    );
                    ok = false;
                }
                Some(d) => days |= 1 << d,
                None => ok = false,
            }
        })?;
        if !any {
            p.error(path, format!("must list at least one day: expected {DAYS}"));
            return Ok(Got::Bad);
        }
        Ok(if ok { Got::Ok(days) } else { Got::Bad })
    }
}

/// An array of objects (stages or rules). `Out` is the valid items, and whether there was any.
struct List<K>(fn(usize) -> K, &'static str);

impl<K: Container> Container for List<K> {
    type Out = (Vec<K::Out>, bool);

    fn expected(&self) -> &'static str {
        self.1
    }

    fn seq<'de, A: SeqAccess<'de>>(
        self,
        p: &mut Parser,
        path: &Path,
        mut seq: A,
    ) -> Result<Got<Self::Out>, A::Error> {
        let mut items = Vec::new();
        let mut i = 0;
        loop {
            let path = path.index(i);
            let kind = (self.0)(i);
            let expected = kind.expected();
            let Some(got) = seq.next_element_seed(At {
                p,
                path: &path,
                kind,
            })?
            else {
                break;
            };
            if let Some(item) = p.not_null(&path, got, expected) {
                items.push(item);
            }
            i += 1;
        }
        Ok(Got::Ok((items, i > 0)))
    }
}

/// A `window` object.
struct WindowKind;

impl Container for WindowKind {
    type Out = Window;

    fn expected(&self) -> &'static str {
        "an object (a weekly window)"
    }

    fn map<'de, A: MapAccess<'de>>(
        self,
        p: &mut Parser,
        path: &Path,
        map: A,
    ) -> Result<Got<Window>, A::Error> {
        const KEYS: &[&str] = &["time_zone", "days", "from", "to"];
        let (mut tz, mut days, mut from, mut to) = (Got::Null, Got::Null, Got::Null, Got::Null);
        fields(p, path, map, KEYS, |p, path, i, map| {
            match i {
                0 => {
                    let got = map.next_value_seed(ScalarAt {
                        p,
                        path,
                        expected: ZONE,
                    })?;
                    tz = scalar(got, |s| zone(p, path, s));
                }
                1 => {
                    days = map.next_value_seed(At {
                        p,
                        path,
                        kind: Days,
                    })?
                }
                _ => {
                    let got = map.next_value_seed(ScalarAt {
                        p,
                        path,
                        expected: TIME,
                    })?;
                    let got = scalar(got, |s| time(p, path, s, i == 3));
                    if i == 2 { from = got } else { to = got }
                }
            }
            Ok(())
        })?;
        let tz = p.required(
            path,
            "time_zone",
            tz,
            "an IANA time zone name such as \"Europe/Paris\"",
        );
        let days = p.required(path, "days", days, DAYS);
        let from = p.required(
            path,
            "from",
            from,
            "a 24-hour time as HH:MM, e.g. \"09:00\"",
        );
        let to = p.required(
            path,
            "to",
            to,
            "a 24-hour time as HH:MM, e.g. \"18:00\", or \"24:00\"",
        );
        let (Some(tz), Some(days), Some(from), Some(to)) = (tz, days, from, to) else {
            return Ok(Got::Bad);
        };
        if from >= to {
            p.error(
                &path.key("to"),
                format!(
                    "must be later than `from` ({:02}:{:02}), found {:02}:{:02}; a window cannot \
                     cross midnight: split it into two rules, one ending at \"24:00\" and one \
                     starting at \"00:00\"",
                    from / 60,
                    from % 60,
                    to / 60,
                    to % 60
                ),
            );
            return Ok(Got::Bad);
        }
        Ok(Got::Ok(Window {
            time_zone: tz,
            days,
            from_minute: from,
            to_minute: to,
        }))
    }
}

/// A stage object; `index` is its position in `stages`.
struct StageKind {
    index: usize,
}

impl Container for StageKind {
    type Out = Stage;

    fn expected(&self) -> &'static str {
        "an object (a stage)"
    }

    fn map<'de, A: MapAccess<'de>>(
        self,
        p: &mut Parser,
        path: &Path,
        map: A,
    ) -> Result<Got<Stage>, A::Error> {
        const KEYS: &[&str] = &["name", "users", "groups", "count"];
        let default_name = || format!("stage {}", self.index + 1);
        let (mut stage_name, mut users, mut groups, mut count) =
            (Got::Null, Got::Null, Got::Null, Got::Null);
        fields(p, path, map, KEYS, |p, path, i, map| {
            match i {
                0 => {
                    let got = map.next_value_seed(ScalarAt {
                        p,
                        path,
                        expected: A_STRING,
                    })?;
                    stage_name = scalar(got, |s| name(p, path, s, default_name));
                }
                1 => {
                    users = map.next_value_seed(At {
                        p,
                        path,
                        kind: StrList,
                    })?
                }
                2 => {
                    groups = map.next_value_seed(At {
                        p,
                        path,
                        kind: StrList,
                    })?
                }
                _ => {
                    let got = map.next_value_seed(ScalarAt {
                        p,
                        path,
                        expected: POSITIVE,
                    })?;
                    count = scalar(got, |s| positive(p, path, s));
                }
            }
            Ok(())
        })?;
        let (Ok(stage_name), Ok(users), Ok(groups), Ok(count)) = (
            stage_name.optional(),
            users.optional(),
            groups.optional(),
            count.optional(),
        ) else {
            return Ok(Got::Bad);
        };
        let users = users.unwrap_or_default();
        let groups = groups.unwrap_or_default();
        let count = count.unwrap_or(1);
        if users.is_empty() && groups.is_empty() {
            p.error(
                path,
                "lists no users and no groups, so nobody could approve it; \
                 add `users` (principal ids) or `groups`",
            );
            return Ok(Got::Bad);
        }
        if groups.is_empty() && count > 1 {
            let mut distinct: Vec<&str> = users.iter().map(String::as_str).collect();
            distinct.sort_unstable();
            distinct.dedup();
            if count as usize > distinct.len() {
                let listed = match distinct.len() {
                    1 => "only 1 user is listed".to_string(),
                    n => format!("only {n} users are listed"),
                };
                p.error(
                    &path.key("count"),
                    format!(
                        "needs {count} approvals but {listed} and no groups; lower `count` to at \
                         most {} or add users or groups",
                        distinct.len()
                    ),
                );
                return Ok(Got::Bad);
            }
        }
        Ok(Got::Ok(Stage {
            name: stage_name.unwrap_or_else(default_name),
            users,
            groups,
            count,
        }))
    }
}

/// An auto-approve rule object; `index` is its position in `auto_approve`.
struct RuleKind {
    index: usize,
}

impl Container for RuleKind {
    type Out = AutoApproveRule;

    fn expected(&self) -> &'static str {
        "an object (an auto-approve rule)"
    }

    fn map<'de, A: MapAccess<'de>>(
        self,
        p: &mut Parser,
        path: &Path,
        map: A,
    ) -> Result<Got<AutoApproveRule>, A::Error> {
        const KEYS: &[&str] = &["name", "requester_groups", "window", "max_duration"];
        let default_name = || format!("rule {}", self.index);
        let (mut rule_name, mut groups, mut window, mut max) =
            (Got::Null, Got::Null, Got::Null, Got::Null);
        fields(p, path, map, KEYS, |p, path, i, map| {
            match i {
                0 => {
                    let got = map.next_value_seed(ScalarAt {
                        p,
                        path,
                        expected: A_STRING,
                    })?;
                    rule_name = scalar(got, |s| name(p, path, s, default_name));
                }
                1 => {
                    groups = map.next_value_seed(At {
                        p,
                        path,
                        kind: StrList,
                    })?;
                    if matches!(&groups, Got::Ok(g) if g.is_empty()) {
                        p.error(
                            path,
                            "must list at least one group; omit it to match every requester",
                        );
                        groups = Got::Bad;
                    }
                }
                2 => {
                    window = map.next_value_seed(At {
                        p,
                        path,
                        kind: WindowKind,
                    })?
                }
                _ => {
                    let got = map.next_value_seed(ScalarAt {
                        p,
                        path,
                        expected: DURATION,
                    })?;
                    max = scalar(got, |s| max_duration(p, path, s));
                }
            }
            Ok(())
        })?;
        let (Ok(rule_name), Ok(requester_groups), Ok(window), Ok(max_duration_seconds)) = (
            rule_name.optional(),
            groups.optional(),
            window.optional(),
            max.optional(),
        ) else {
            return Ok(Got::Bad);
        };
        Ok(Got::Ok(AutoApproveRule {
            name: rule_name.unwrap_or_else(default_name),
            requester_groups,
            window,
            max_duration_seconds,
        }))
    }
}

/// The `break_glass` object.
struct BreakGlassKind;

impl Container for BreakGlassKind {
    type Out = BreakGlass;

    fn expected(&self) -> &'static str {
        "an object"
    }

    fn map<'de, A: MapAccess<'de>>(
        self,
        p: &mut Parser,
        path: &Path,
        map: A,
    ) -> Result<Got<BreakGlass>, A::Error> {
        const KEYS: &[&str] = &["enabled", "min_justification_chars"];
        let (mut enabled, mut min) = (Got::Null, Got::Null);
        fields(p, path, map, KEYS, |p, path, i, map| {
            if i == 0 {
                let got = map.next_value_seed(ScalarAt {
                    p,
                    path,
                    expected: BOOLEAN,
                })?;
                enabled = scalar(got, |s| boolean(p, path, s));
            } else {
                let got = map.next_value_seed(ScalarAt {
                    p,
                    path,
                    expected: POSITIVE,
                })?;
                min = scalar(got, |s| positive(p, path, s));
            }
            Ok(())
        })?;
        let (Ok(enabled), Ok(min)) = (enabled.optional(), min.optional()) else {
            return Ok(Got::Bad);
        };
        Ok(Got::Ok(BreakGlass {
            enabled: enabled.unwrap_or(false),
            min_justification_chars: min.unwrap_or(DEFAULT_MIN_JUSTIFICATION_CHARS),
        }))
    }
}

/// The whole settings document.
struct SettingsKind;

impl Container for SettingsKind {
    type Out = Settings;

    fn expected(&self) -> &'static str {
        "an object"
    }

    fn map<'de, A: MapAccess<'de>>(
        self,
        p: &mut Parser,
        path: &Path,
        map: A,
    ) -> Result<Got<Settings>, A::Error> {
        const KEYS: &[&str] = &["stages", "auto_approve", "break_glass"];
        let (mut stages, mut rules, mut break_glass) = (Got::Null, Got::Null, Got::Null);
        fields(p, path, map, KEYS, |p, path, i, map| {
            match i {
                0 => {
                    let kind = List(|index| StageKind { index }, "an array of stages");
                    stages = map.next_value_seed(At { p, path, kind })?;
                }
                1 => {
                    let kind = List(|index| RuleKind { index }, "an array of auto-approve rules");
                    rules = map.next_value_seed(At { p, path, kind })?;
                }
                _ => {
                    break_glass = map.next_value_seed(At {
                        p,
                        path,
                        kind: BreakGlassKind,
                    })?
                }
            }
            Ok(())
        })?;
        // Invalid stages or rules (`Bad`) count as given, to avoid a second error about them.
        fn given<T>(got: &Got<(T, bool)>) -> bool {
            !matches!(got, Got::Null | Got::Ok((_, false)))
        }
        if !given(&stages) && !given(&rules) {
            p.error(
                &path.key("stages"),
                "at least one stage or one auto_approve rule is required, e.g. \
                 \"stages\": [{ \"groups\": [\"leads\"], \"count\": 1 }]",
            );
        }
        let (Ok(stages), Ok(rules), Ok(break_glass)) =
            (stages.optional(), rules.optional(), break_glass.optional())
        else {
            return Ok(Got::Bad);
        };
        Ok(Got::Ok(Settings {
            stages: stages.map(|s| s.0).unwrap_or_default(),
            auto_approve: rules.map(|r| r.0).unwrap_or_default(),
            break_glass: break_glass.unwrap_or_default(),
        }))
    }
}
