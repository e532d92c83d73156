//! CSV inventories (`host/src/inventory.rs` `parse_csv`).
//!
//! Properties: any file is read or refused, never a panic, with one result per non-blank, non-comment line after
//! the header, numbered as in the file; hosts written as RFC 4180 CSV (columns in any order and case, cells
//! quoted or not, quotes doubled, spaces around) read back field by field.

#![no_main]

mod common;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use omserver::inventory::{parse_csv, HostForm, CSV_COLUMNS};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(parsed) = parse_csv(text) {
            let lines = text.lines().count();
            assert!(parsed.windows(2).all(|w| w[0].line < w[1].line));
            assert!(parsed.iter().all(|p| p.line >= 2 && p.line <= lines));
        }
    }
    let _ = written_then_read(&mut Unstructured::new(data));
});

fn written_then_read(u: &mut Unstructured<'_>) -> Result<()> {
    let mut columns: Vec<&str> = vec!["name", "ip"];
    for extra in &CSV_COLUMNS[2..] {
        if u.arbitrary()? {
            columns.push(extra);
        }
    }
    // Any order.
    for i in (1..columns.len()).rev() {
        columns.swap(i, u.int_in_range(0..=i)?);
    }
    let header: Vec<String> = columns
        .iter()
        .map(|c| Ok(if u.arbitrary()? { format!(" {} ", c.to_ascii_uppercase()) } else { (*c).to_owned() }))
        .collect::<Result<_>>()?;
    let mut text = header.join(",") + "\n";
    let mut expected = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let mut form = HostForm { name: cell_text(u)?, ip: cell_text(u)?, ..HostForm::default() };
        let mut cells = Vec::new();
        for column in &columns {
            let cell = match *column {
                "name" => form.name.clone(),
                "ip" => form.ip.clone(),
                "port" => {
                    form.port = u.arbitrary()?;
                    form.port.map(|p| p.to_string()).unwrap_or_default()
                }
                "tags" => {
                    let tags: Vec<String> = (0..u.int_in_range(0..=3)?)
                        .map(|_| common::word(u, "ab1-_.,\"é", 1, 6))
                        .collect::<Result<_>>()?;
                    let mut cell = String::new();
                    for tag in &tags {
                        if !cell.is_empty() {
                            cell.push_str(u.choose(&[";", " ", "; ", "  "])?);
                        }
                        cell.push_str(tag);
                    }
                    form.tags = tags;
                    cell
                }
                other => {
                    let value = cell_text(u)?;
                    let slot = match other {
                        "wan_ip" => &mut form.wan_ip,
                        "op" => &mut form.op,
                        "function" => &mut form.function,
                        "app" => &mut form.app,
                        _ => &mut form.user,
                    };
                    *slot = Some(value.clone()).filter(|v| !v.is_empty());
                    value
                }
            };
            cells.push(quote(u, &cell)?);
        }
        text.push_str(&cells.join(","));
        text.push('\n');
        expected.push(form);
        if u.ratio(1u8, 4u8)? {
            text.push_str(u.choose(&["\n", "# a comment, with \"quotes\n", "   \n"])?);
        }
    }
    let parsed = parse_csv(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert_eq!(parsed.len(), expected.len(), "{text:?}");
    for (p, want) in parsed.iter().zip(&expected) {
        let got = p.host.as_ref().unwrap_or_else(|e| panic!("{text:?} line {}: {e}", p.line));
        let fields = |f: &HostForm| {
            (
                f.name.clone(),
                f.ip.clone(),
                f.wan_ip.clone(),
                f.op.clone(),
                f.function.clone(),
                f.app.clone(),
                f.port,
                f.user.clone(),
                f.tags.clone(),
            )
        };
        assert_eq!(fields(got), fields(want), "{text:?} line {}", p.line);
    }
    Ok(())
}

/// A cell's value as the parser keeps it: no line break (a record is one line), no spaces around.
fn cell_text(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(common::text(u, "ab1. ,\"#é", 10)?.replace(['\n', '\r'], "").trim().to_owned())
}

/// RFC 4180: quoted when it must be (a comma, a quote, a leading `#` that would make the line a comment) and at
/// random otherwise, quotes doubled; spaces around, which the parser trims.
fn quote(u: &mut Unstructured<'_>, cell: &str) -> Result<String> {
    let must = cell.contains([',', '"']) || cell.starts_with('#');
    let padded = |u: &mut Unstructured<'_>, s: String| -> Result<String> {
        Ok(if u.ratio(1u8, 4u8)? { format!(" {s} ") } else { s })
    };
    if must || u.ratio(1u8, 4u8)? {
        let quoted = format!("\"{}\"", cell.replace('"', "\"\""));
        padded(u, quoted)
    } else {
        padded(u, cell.to_owned())
    }
}
