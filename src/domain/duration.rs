//! Human durations (`90s`, `30m`, `1h30m`, `2d`, or a plain number of seconds) and times.

/// `2026-11-25 14:03 UTC`, for people (pages and mail).
pub fn format_utc(ms: super::Millis) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// Parse a duration into whole seconds. Units: `s`, `m`, `h`, `d`; at least one second.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration; use e.g. `30m`, `1h`, `1h30m` or a number of seconds".into());
    }
    if let Ok(n) = t.parse::<u64>() {
        return positive(n, text);
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut any = false;
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => {
                return Err(format!(
                    "`{text}`: unknown unit `{c}`; use s, m, h or d (e.g. `1h30m`)"
                ));
            }
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{text}`: expected a number before `{c}`"))?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("`{text}`: too long"))?;
        any = true;
    }
    if !digits.is_empty() || !any {
        return Err(format!(
            "`{text}`: a number needs a unit (s, m, h or d), e.g. `{digits}m`"
        ));
    }
    positive(total, text)
}

fn positive(n: u64, text: &str) -> Result<u64, String> {
    if n == 0 {
        return Err(format!("`{text}`: a duration must be at least 1 second"));
    }
    if n > 366 * 86_400 {
        return Err(format!("`{text}`: longer than a year"));
    }
    Ok(n)
}

/// `1h30m`, `45s`, `2d`: the shortest exact form.
pub fn format_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = secs;
    for (unit, name) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
        if rest >= unit {
            out.push_str(&(rest / unit).to_string());
            out.push(name);
            rest %= unit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration(" 2d "), Ok(172_800));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("10").is_ok());
        assert!(parse_duration("1h30").is_err());
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("400d").is_err());
        assert_eq!(format_duration(5400), "1h30m");
        assert_eq!(format_duration(86_401), "1d1s");
        assert_eq!(format_duration(45), "45s");
    }
}
