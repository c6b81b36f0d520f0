//! XML-RPC's `dateTime.iso8601`, as a small type of its own.
//!
//! The XML-RPC spec shows one form, `19980310T07:53:26`, and says nothing of
//! zones: most peers (Python's `xmlrpc.client`, Apache XML-RPC, the
//! validator suite) send a naive local time in that basic form, some the
//! extended form `1998-03-10T07:53:26`, a few a fraction or an offset. A
//! value must come back as it went, so this type keeps what was sent: the
//! calendar fields, a fraction if there was one, an offset only if there was
//! one. `chrono` and `time` split the naive and the zoned cases into two
//! types each and would need a parser of their own for the basic form
//! anyway; this one is some two hundred lines without a dependency, and
//! converts to either through its fields or its ISO 8601 text.

use std::fmt;
use std::str::FromStr;

/// A date and a time of day, with an optional UTC offset, as XML-RPC's
/// `dateTime.iso8601` carries it.
///
/// It parses the basic (`19980310T07:53:26`, `19980310T075326`) and the
/// extended (`1998-03-10T07:53:26`) forms of ISO 8601, with an optional
/// fraction of a second and an optional `Z` or `±hh:mm` offset. It prints
/// the extended form ([`Display`](fmt::Display), the JSON-RPC form) or the
/// basic one ([`DateTime::to_xmlrpc`]).
///
/// ```
/// use forkd_core::rpc::DateTime;
///
/// let t: DateTime = "19980310T07:53:26".parse().unwrap();
/// assert_eq!((t.year(), t.month(), t.day()), (1998, 3, 10));
/// assert_eq!(t.to_string(), "1998-03-10T07:53:26");
/// assert_eq!(t.to_xmlrpc(), "19980310T07:53:26");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateTime {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    nanosecond: u32,
    /// Minutes east of UTC, when the value said.
    offset: Option<i16>,
}

/// Why a text is not a [`DateTime`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateTimeError(String);

impl fmt::Display for DateTimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid date-time '{}': expected ISO 8601 like 19980310T07:53:26", self.0)
    }
}

impl std::error::Error for DateTimeError {}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        // Leap years: every fourth, but not every hundredth unless every
        // four hundredth.
        2 if matches!((year % 4, year % 100, year % 400), (0, 1.., _) | (_, _, 0)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl DateTime {
    /// A naive date-time; `None` unless every field is in its range
    /// (year 1 to 9999, as Python's `datetime` and most peers take it;
    /// seconds 0 to 59).
    pub fn new(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> Option<DateTime> {
        let valid = (1..=9999).contains(&year)
            && (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month)
            && hour < 24
            && minute < 60
            && second < 60;
        valid.then_some(DateTime { year, month, day, hour, minute, second, nanosecond: 0, offset: None })
    }

    /// The same with a fraction of a second, in nanoseconds (below 10⁹).
    pub fn with_nanosecond(self, nanosecond: u32) -> Option<DateTime> {
        (nanosecond < 1_000_000_000).then_some(DateTime { nanosecond, ..self })
    }

    /// The same with an offset from UTC, in minutes (less than a day either
    /// way), or naive again with `None`.
    pub fn with_offset(self, minutes: Option<i16>) -> Option<DateTime> {
        let valid = match minutes {
            Some(m) => m.abs() < 24 * 60,
            None => true,
        };
        valid.then_some(DateTime { offset: minutes, ..self })
    }

    /// The year.
    pub fn year(&self) -> u16 {
        self.year
    }
    /// The month, 1 to 12.
    pub fn month(&self) -> u8 {
        self.month
    }
    /// The day of the month, from 1.
    pub fn day(&self) -> u8 {
        self.day
    }
    /// The hour, 0 to 23.
    pub fn hour(&self) -> u8 {
        self.hour
    }
    /// The minute, 0 to 59.
    pub fn minute(&self) -> u8 {
        self.minute
    }
    /// The second, 0 to 59.
    pub fn second(&self) -> u8 {
        self.second
    }
    /// The fraction of the second, in nanoseconds.
    pub fn nanosecond(&self) -> u32 {
        self.nanosecond
    }
    /// The offset from UTC in minutes, if the value had one.
    pub fn offset(&self) -> Option<i16> {
        self.offset
    }

    /// The XML-RPC form: the basic date, then the extended time
    /// (`19980310T07:53:26`), which every XML-RPC peer parses.
    pub fn to_xmlrpc(&self) -> String {
        let mut out = format!("{:04}{:02}{:02}T", self.year, self.month, self.day);
        self.write_time(&mut out);
        out
    }

    fn write_time(&self, out: &mut String) {
        out.push_str(&format!("{:02}:{:02}:{:02}", self.hour, self.minute, self.second));
        if self.nanosecond > 0 {
            let digits = format!("{:09}", self.nanosecond);
            out.push('.');
            out.push_str(digits.trim_end_matches('0'));
        }
        match self.offset {
            None => {}
            Some(0) => out.push('Z'),
            Some(m) => {
                let sign = if m < 0 { '-' } else { '+' };
                out.push_str(&format!("{sign}{:02}:{:02}", m.abs() / 60, m.abs() % 60));
            }
        }
    }
}

impl fmt::Display for DateTime {
    /// The extended ISO 8601 form, `1998-03-10T07:53:26`: the JSON-RPC form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = format!("{:04}-{:02}-{:02}T", self.year, self.month, self.day);
        self.write_time(&mut out);
        f.write_str(&out)
    }
}

/// A cursor over the ASCII bytes of a date-time.
struct Scan<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Scan<'_> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        let part = self.bytes.get(self.pos..self.pos + n)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.pos += n;
        Some(part.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
    }

    /// Eats `c` if it is next.
    fn eat(&mut self, c: u8) -> bool {
        let found = self.bytes.get(self.pos) == Some(&c);
        self.pos += usize::from(found);
        found
    }

    /// Two digits, a separator that must be there (`Some(c)`) or not, when
    /// the form says (`with`).
    fn field(&mut self, separator: Option<u8>) -> Option<u8> {
        if let Some(c) = separator {
            if !self.eat(c) {
                return None;
            }
        }
        self.digits(2).and_then(|n| u8::try_from(n).ok())
    }

    fn fraction(&mut self) -> Option<u32> {
        if !(self.eat(b'.') || self.eat(b',')) {
            return Some(0);
        }
        let start = self.pos;
        while self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        let digits = &self.bytes[start..self.pos];
        if digits.is_empty() || digits.len() > 9 {
            return None;
        }
        let value = digits.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
        Some(value * 10u32.pow(9 - digits.len() as u32))
    }

    fn offset(&mut self) -> Option<Option<i16>> {
        if self.eat(b'Z') {
            return Some(Some(0));
        }
        let sign = match self.bytes.get(self.pos) {
            None => return Some(None),
            Some(b'+') => 1,
            Some(b'-') => -1,
            Some(_) => return None,
        };
        self.pos += 1;
        let hours = self.digits(2)? as i16;
        let extended = self.eat(b':');
        let minutes = match self.digits(2) {
            Some(m) => m as i16,
            None if !extended => 0,
            None => return None,
        };
        (hours < 24 && minutes < 60).then_some(Some(sign * (hours * 60 + minutes)))
    }
}

impl FromStr for DateTime {
    type Err = DateTimeError;

    fn from_str(text: &str) -> Result<DateTime, DateTimeError> {
        let error = || DateTimeError(super::error::quote(text).into_owned());
        let mut s = Scan { bytes: text.trim().as_bytes(), pos: 0 };
        let year = s.digits(4).ok_or_else(error)? as u16;
        let extended_date = s.eat(b'-');
        let month = s.field(None).ok_or_else(error)?;
        let day = s.field(extended_date.then_some(b'-')).ok_or_else(error)?;
        if !s.eat(b'T') {
            return Err(error());
        }
        let hour = s.field(None).ok_or_else(error)?;
        let extended_time = s.bytes.get(s.pos) == Some(&b':');
        let minute = s.field(extended_time.then_some(b':')).ok_or_else(error)?;
        let second = s.field(extended_time.then_some(b':')).ok_or_else(error)?;
        let nanosecond = s.fraction().ok_or_else(error)?;
        let offset = s.offset().ok_or_else(error)?;
        if s.pos != s.bytes.len() {
            return Err(error());
        }
        DateTime::new(year, month, day, hour, minute, second)
            .and_then(|t| t.with_nanosecond(nanosecond))
            .and_then(|t| t.with_offset(offset))
            .ok_or_else(error)
    }
}

impl serde::Serialize for DateTime {
    /// As its extended ISO 8601 text.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DateTime {
    /// From ISO 8601 text, or from the tagged value that
    /// [`value::datetime`](super::value::datetime) makes.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<DateTime, D::Error> {
        let value = super::value::Value::deserialize(deserializer)?;
        let text = match &value {
            super::value::Value::String(s) => s.as_str(),
            other => super::value::tagged(other, super::value::DATETIME_TAG).unwrap_or_default(),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::DateTime;

    #[test]
    fn forms_parse_and_print() {
        let check = |text: &str, iso: &str, xmlrpc: &str| {
            let t: DateTime = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((t.to_string().as_str(), t.to_xmlrpc().as_str()), (iso, xmlrpc), "{text}");
            assert_eq!(iso.parse::<DateTime>(), Ok(t), "{iso} round-trips");
            assert_eq!(xmlrpc.parse::<DateTime>(), Ok(t), "{xmlrpc} round-trips");
        };
        check("19980310T07:53:26", "1998-03-10T07:53:26", "19980310T07:53:26");
        check("1998-03-10T07:53:26", "1998-03-10T07:53:26", "19980310T07:53:26");
        check("19980310T075326", "1998-03-10T07:53:26", "19980310T07:53:26");
        check(" 2000-02-29T23:59:59.120Z ", "2000-02-29T23:59:59.12Z", "20000229T23:59:59.12Z");
        check("20240101T00:00:00+0530", "2024-01-01T00:00:00+05:30", "20240101T00:00:00+05:30");
        check("20240101T00:00:00-08", "2024-01-01T00:00:00-08:00", "20240101T00:00:00-08:00");
    }

    #[test]
    fn invalid_dates_are_refused() {
        for text in [
            "",
            "1998",
            "19980310",
            "19980310T07:53",
            "19981310T07:53:26",
            "00000101T00:00:00",
            "0000-01-10T07:53:26",
            "19990229T07:53:26",
            "19980310T24:00:00",
            "19980310T07:60:00",
            "19980310T07:53:26x",
            "1998-0310T07:53:26",
            "19980310T07:5326",
            "19980310T07:53:26.",
            "19980310T07:53:26+25:00",
            "１９９８0310T07:53:26",
        ] {
            assert!(text.parse::<DateTime>().is_err(), "{text:?} parsed");
        }
    }
}
