//! What the targets share: drawing text from the fuzzer's bytes, biased towards the characters a parser cares
//! about (uniformly random strings almost never contain a `|1|` or a `%2B`).

#![allow(dead_code)] // each target uses a part

use arbitrary::{Result, Unstructured};

/// At most `max` characters, mostly from `alphabet`, sometimes any `char`.
pub fn text(u: &mut Unstructured<'_>, alphabet: &str, max: usize) -> Result<String> {
    let chars: Vec<char> = alphabet.chars().collect();
    let len = u.int_in_range(0..=max)?;
    let mut out = String::with_capacity(len);
    for _ in 0..len {
        if !chars.is_empty() && u.ratio(15u8, 16u8)? {
            out.push(*u.choose(&chars)?);
        } else {
            out.push(u.arbitrary::<char>()?);
        }
    }
    Ok(out)
}

/// Between `min` and `max` characters, all from `alphabet` (which must not be empty).
pub fn word(u: &mut Unstructured<'_>, alphabet: &str, min: usize, max: usize) -> Result<String> {
    let chars: Vec<char> = alphabet.chars().collect();
    let len = u.int_in_range(min..=max)?;
    (0..len).map(|_| u.choose(&chars).copied()).collect()
}

pub const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
pub const ALNUM: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// A real calendar date and time, `YYYY-MM-DD HH:MM:SS`.
pub fn datetime(u: &mut Unstructured<'_>) -> Result<String> {
    let year = u.int_in_range(1970..=2200u32)?;
    let month = u.int_in_range(1..=12u32)?;
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    let day = u.int_in_range(1..=days)?;
    let (h, m, s) = (u.int_in_range(0..=23u32)?, u.int_in_range(0..=59u32)?, u.int_in_range(0..=59u32)?);
    Ok(format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}"))
}
