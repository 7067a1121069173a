//! Amounts read independently of the exporter: the exact micro-dollars a decimal text
//! means, by moving its decimal point in the text itself (no float, no shared code).

/// The amount cap: 10^12 USD in micro-dollars.
const CAP_MICROS: i128 = 1_000_000_000_000_000_000;

/// The micro-dollars of a decimal `[+-]digits[.digits][e[+-]digits]` (at least one digit in
/// the mantissa, `5.` and `.5` allowed), rounded half away from zero; `None` for anything else
/// and for amounts of 10^12 USD or more.
pub fn micros(text: &str) -> Option<i64> {
    let (neg, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.len() + frac.len() == 0 || !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut shift: i64 = 6;
    if let Some(e) = exp {
        let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let digits = digits.trim_start_matches('0');
        // Beyond 40 places every non-zero amount is out of range or rounds to nothing.
        let n: i64 = if digits.len() > 6 {
            1_000_000
        } else {
            digits.parse().unwrap_or(0)
        };
        shift += if e.starts_with('-') { -n } else { n };
    }
    // The digits without leading zeros of the whole part, and how many of them make whole
    // micro-dollars.
    let padded_int = int.trim_start_matches('0');
    let digits = format!("{padded_int}{frac}");
    let point = i64::try_from(padded_int.len()).ok()? + shift;
    if digits.bytes().all(|c| c == b'0') {
        return Some(0);
    }
    // Leading zeros of the fraction (`0.005`) move the point, not the value.
    let significant = digits.trim_start_matches('0');
    let point = point - i64::try_from(digits.len() - significant.len()).ok()?;
    let digits = significant.to_owned();
    if point > 40 {
        return None;
    }
    let (whole, dropped): (String, Option<u8>) = if point <= 0 {
        let first = if point == 0 {
            digits.bytes().next()
        } else {
            None
        };
        (String::new(), first)
    } else {
        let p = usize::try_from(point).ok()?;
        let mut w = digits.clone();
        while w.len() < p {
            w.push('0');
        }
        (w[..p].to_owned(), digits.as_bytes().get(p).copied())
    };
    let whole = whole.trim_start_matches('0');
    if whole.len() > 20 {
        return None;
    }
    let value: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    if value >= CAP_MICROS {
        return None;
    }
    let rounded = value + i128::from(dropped.is_some_and(|d| d >= b'5'));
    let signed = if neg { -rounded } else { rounded };
    i64::try_from(signed).ok()
}

/// How the exporter documents amount text (`51.19`, ` -3 `, `$1,234.50`, `-$12`, `1.5e-3`):
/// trimmed; at most one sign and one `$` before the number, in either order, each maybe
/// followed by spaces; then a decimal ([`micros`], unsigned), whose whole part may be grouped
/// in thousands by commas (`1,234,567.89`: a first group of one to three digits, then groups
/// of exactly three; after the point, at least one digit and digits only, so no exponent).
/// Anything else is no amount: `12,34`, `1.$50`, `$$5`, `+-5`.
pub fn text_micros(text: &str) -> Option<i64> {
    let mut rest = text.trim();
    let (mut sign, mut dollar) = (None, false);
    loop {
        match rest.as_bytes().first() {
            Some(&c @ (b'-' | b'+')) if sign.is_none() => sign = Some(c),
            Some(b'$') if !dollar => dollar = true,
            _ => break,
        }
        rest = rest[1..].trim_start();
    }
    let number = if rest.contains(',') {
        ungrouped(rest)?
    } else {
        rest.to_owned()
    };
    if number.starts_with(['+', '-']) {
        return None;
    }
    let m = micros(&number)?;
    Some(if sign == Some(b'-') { -m } else { m })
}

/// `text` without its thousands separators, if every comma separates thousands.
fn ungrouped(text: &str) -> Option<String> {
    let (whole, fraction) = match text.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (text, None),
    };
    let groups: Vec<&str> = whole.split(',').collect();
    let all_digits = |g: &str| g.bytes().all(|c| c.is_ascii_digit());
    let grouped = (1..=3).contains(&groups[0].len())
        && groups[1..].iter().all(|g| g.len() == 3)
        && groups.iter().all(|g| all_digits(g));
    let fraction_ok = fraction.is_none_or(|f| !f.is_empty() && all_digits(f));
    (grouped && fraction_ok).then(|| match fraction {
        Some(f) => format!("{}.{f}", groups.concat()),
        None => groups.concat(),
    })
}
