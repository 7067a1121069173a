//! Calendar months in UTC: the unit Atlas bills in.
//!
//! Cost Explorer data is monthly (`usageDate` is always the 1st), and its date range is given
//! as first-of-month dates. [`Month`] does the arithmetic without a calendar library, so year
//! ends roll over by construction.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A calendar month, e.g. 2026-11.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    /// Count of months since year 0: `year * 12 + (month - 1)`. Ordering and arithmetic are
    /// plain integer operations on it.
    index: i64,
}

impl Month {
    /// The month `year`-`month` (`month` in 1..=12).
    ///
    /// # Errors
    /// Returns `None` when `month` is not in 1..=12.
    pub fn new(year: i32, month: u32) -> Option<Month> {
        (1..=12).contains(&month).then(|| Month {
            index: i64::from(year) * 12 + i64::from(month) - 1,
        })
    }

    /// The calendar year.
    pub fn year(self) -> i32 {
        i32::try_from(self.index.div_euclid(12)).unwrap_or(i32::MAX)
    }

    /// The month of the year, 1..=12.
    pub fn month(self) -> u32 {
        u32::try_from(self.index.rem_euclid(12) + 1).unwrap_or(1)
    }

    /// The UTC month that contains `t`.
    pub fn containing(t: SystemTime) -> Month {
        let secs = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        };
        let (y, m, _) = civil_from_days(secs.div_euclid(86_400));
        Month {
            index: y * 12 + i64::from(m) - 1,
        }
    }

    /// The month `n` months later (earlier when `n` is negative).
    pub fn plus(self, n: i64) -> Month {
        Month {
            index: self.index + n,
        }
    }

    /// The number of months from `earlier` to `self`.
    pub fn since(self, earlier: Month) -> i64 {
        self.index - earlier.index
    }

    /// Number of days in this month (leap years included).
    pub fn days(self) -> u32 {
        match self.month() {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            _ => {
                let y = self.year();
                if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
                    29
                } else {
                    28
                }
            }
        }
    }

    /// The first day of the month as Atlas wants it in a request: `YYYY-MM-01`.
    pub fn first_day(self) -> String {
        format!("{self}-01")
    }

    /// Parses the month out of an Atlas date: `YYYY-MM-DD`, `YYYY-MM`, or an ISO 8601
    /// timestamp that starts with a date. The day is ignored: Atlas data is monthly.
    pub fn parse_date(s: &str) -> Option<Month> {
        let s = s.trim();
        let bytes = s.as_bytes();
        if bytes.len() < 7 || bytes[4] != b'-' {
            return None;
        }
        // Digits only: `+202-11` or `-001-11` is no Atlas date (an i32 parse takes a sign).
        if !bytes[..4]
            .iter()
            .chain(&bytes[5..7])
            .all(u8::is_ascii_digit)
        {
            return None;
        }
        let year: i32 = s.get(0..4)?.parse().ok()?;
        let month: u32 = s.get(5..7)?.parse().ok()?;
        if bytes.len() > 7 && bytes[7] != b'-' {
            return None;
        }
        Month::new(year, month)
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year(), self.month())
    }
}

/// Days since 1970-01-01 to (year, month, day), from Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let m = u32::try_from(m).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The day of the month (1-based) of `t` in UTC.
pub fn day_of_month(t: SystemTime) -> u32 {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0)).2
}

/// Days of data behind the month-to-date on day `day` (1-based) of a month: Atlas posts a
/// day's charges the next day, so on day `d` the data runs through day `d - 1`. On the 1st
/// nothing of the month is posted yet; it counts as one day so the forecast stays defined
/// (it equals the month-to-date times the days of the month, usually 0 then).
pub fn days_elapsed(day: u32) -> u32 {
    day.saturating_sub(1).max(1)
}

/// The month-end forecast of a month-to-date amount (micro-dollars) on day `day` of `month`:
/// `mtd * days_in_month / days_elapsed(day)`, rounded toward zero to the micro-dollar.
pub fn forecast_micros(mtd: i64, month: Month, day: u32) -> i64 {
    let scaled = i128::from(mtd) * i128::from(month.days()) / i128::from(days_elapsed(day));
    i64::try_from(scaled).unwrap_or(if mtd < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// 2026-12-31T23:59:59Z is still December; one second later is January of the next year.
    #[test]
    fn containing_rolls_over_at_year_end() {
        let m = Month::containing(at(1_798_761_599));
        assert_eq!(m.to_string(), "2026-12");
        assert_eq!(Month::containing(at(1_798_761_600)).to_string(), "2027-01");
    }

    /// Arithmetic crosses year boundaries in both directions.
    #[test]
    fn plus_crosses_year_boundaries() {
        let jan = Month::new(2027, 1).expect("valid");
        assert_eq!(jan.plus(-1).to_string(), "2026-12");
        assert_eq!(jan.plus(-13).to_string(), "2025-12");
        assert_eq!(jan.plus(12).first_day(), "2028-01-01");
        assert_eq!(jan.since(jan.plus(-17)), 17);
    }

    /// February has 29 days in leap years only, and 1900 was not one.
    #[test]
    fn days_knows_leap_years() {
        assert_eq!(Month::new(2028, 2).expect("valid").days(), 29);
        assert_eq!(Month::new(2026, 2).expect("valid").days(), 28);
        assert_eq!(Month::new(1900, 2).expect("valid").days(), 28);
        assert_eq!(Month::new(2000, 2).expect("valid").days(), 29);
    }

    /// Dates, bare months and timestamps parse; garbage does not.
    #[test]
    fn parse_date_accepts_atlas_date_forms() {
        let nov = Month::new(2026, 11);
        assert_eq!(Month::parse_date("2026-11-01"), nov);
        assert_eq!(Month::parse_date(" 2026-11 "), nov);
        assert_eq!(Month::parse_date("2026-11-01T00:00:00Z"), nov);
        assert_eq!(Month::parse_date("2026-13-01"), None);
        assert_eq!(Month::parse_date("11/01/2026"), None);
        assert_eq!(Month::parse_date(""), None);
    }

    /// A year or month with a sign is no date (read as year 202 and year -1 before).
    #[test]
    fn parse_date_refuses_signed_years_and_months() {
        for bad in ["+202-11-01", "-001-11", "2026-+1-01", "2026--1", " +026-11"] {
            assert_eq!(Month::parse_date(bad), None, "{bad:?}");
        }
    }

    /// Days since 1970-01-01 to (year, month), counted month by month: the independent
    /// reading `containing` is checked against.
    fn month_of_day(mut day: i64) -> (i32, u32) {
        let (mut y, mut m) = (1970, 1);
        loop {
            let len = i64::from(Month::new(y, m).expect("valid").days());
            if day < len {
                return (y, m);
            }
            day -= len;
            (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        }
    }

    proptest::proptest! {
        /// Moving n months and back is the same month, and `since` counts the n.
        #[test]
        fn plus_and_since_are_inverse(y in 1i32..9999, m in 1u32..=12, n in -120_000i64..120_000) {
            let start = Month::new(y, m).expect("valid");
            proptest::prop_assert_eq!(start.plus(n).since(start), n);
            proptest::prop_assert_eq!(start.plus(n).plus(-n), start);
            proptest::prop_assert_eq!(start.plus(n) > start, n > 0);
        }

        /// Twelve months on is the same month of the next year; one on is the next month.
        #[test]
        fn plus_rolls_over_year_ends(y in 1i32..9999, m in 1u32..=12) {
            let start = Month::new(y, m).expect("valid");
            let a_year = start.plus(12);
            proptest::prop_assert_eq!((a_year.year(), a_year.month()), (y + 1, m));
            let next = start.plus(1);
            let want = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            proptest::prop_assert_eq!((next.year(), next.month()), want);
        }

        /// A month prints as `YYYY-MM` and its first day as Atlas wants it; both parse back.
        #[test]
        fn a_month_prints_and_parses_back(y in 0i32..=9999, m in 1u32..=12) {
            let month = Month::new(y, m).expect("valid");
            proptest::prop_assert_eq!(month.to_string(), format!("{y:04}-{m:02}"));
            proptest::prop_assert_eq!(Month::parse_date(&month.to_string()), Some(month));
            proptest::prop_assert_eq!(Month::parse_date(&month.first_day()), Some(month));
        }

        /// A year's months hold 365 days, or 366 in a Gregorian leap year.
        #[test]
        fn a_year_has_365_or_366_days(y in 1i32..9999) {
            let days: u32 = (1..=12).map(|m| Month::new(y, m).expect("valid").days()).sum();
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            proptest::prop_assert_eq!(days, 365 + u32::from(leap));
        }

        /// The month and day of any instant since 1970 (to 2200) are the ones counted month
        /// by month.
        #[test]
        fn containing_agrees_with_counting_days(secs in 0u64..7_258_118_400) {
            let day = i64::try_from(secs / 86_400).expect("small");
            let (y, m) = month_of_day(day);
            let got = Month::containing(at(secs));
            proptest::prop_assert_eq!((got.year(), got.month()), (y, m));
            let first = (0..day).rev().take_while(|d| month_of_day(*d) == (y, m)).count();
            proptest::prop_assert_eq!(day_of_month(at(secs)), u32::try_from(first).expect("small") + 1);
        }
    }
}
