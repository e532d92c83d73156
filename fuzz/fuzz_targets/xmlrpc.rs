//! Func's XML-RPC (`host/src/backends/func/xmlrpc.rs`).
//!
//! Properties: any answer is a value, a fault or `Malformed`, never a panic (nor a stack overflow: the nesting
//! depth is the sender's to choose); a value written as a `methodResponse` in any of the spellings XML-RPC allows
//! (`<int>`/`<i4>`/`<i8>`, an untyped string, whitespace between elements, entities or CDATA for text) reads back
//! equal, and a fault reads back as that fault; the strings of a `methodCall` we send read back exactly through
//! an XML parser.

#![no_main]

mod common;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use omserver::fuzzing::{method_call, parse_response, xml_char_ok, Param, RpcError, Value};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_response(text);
    }
    let _ = round_trips(&mut Unstructured::new(data));
});

fn round_trips(u: &mut Unstructured<'_>) -> Result<()> {
    let value = value(u, 0)?;
    let mut xml = String::from("<?xml version='1.0'?>\n<methodResponse><params><param>");
    write_value(u, &mut xml, &value)?;
    xml.push_str("</param></params></methodResponse>");
    match parse_response(&xml) {
        Ok(back) => assert!(same(&back, &value), "{xml}\nread back as {back:?}\nnot {value:?}"),
        Err(e) => panic!("{xml}\nrefused: {e}"),
    }

    let (code, message) = (u.arbitrary::<i64>()?, xml_text(u)?);
    let fault = Value::Struct(vec![
        ("faultCode".into(), Value::Int(code)),
        ("faultString".into(), Value::Str(message.clone())),
    ]);
    let mut xml = String::from("<methodResponse><fault>");
    write_value(u, &mut xml, &fault)?;
    xml.push_str("</fault></methodResponse>");
    assert_eq!(parse_response(&xml), Err(RpcError::Fault { code, message }), "{xml}");

    let (method, arg, int, bytes) = (xml_text(u)?, xml_text(u)?, u.arbitrary::<i64>()?, u.arbitrary::<Vec<u8>>()?);
    let call = method_call(&method, &[Param::Str(&arg), Param::Int(int), Param::Base64Text(&bytes)]);
    let doc = roxmltree::Document::parse(&call).unwrap_or_else(|e| panic!("{call}\nis not XML: {e}"));
    let texts: Vec<String> = doc
        .descendants()
        .filter(|n| n.has_tag_name("methodName") || n.has_tag_name("string") || n.has_tag_name("int"))
        .map(|n| n.children().filter_map(|c| c.text()).collect())
        .collect();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    assert_eq!(texts, [method, arg, int.to_string(), b64], "{call}");
    Ok(())
}

/// Text an XML document can carry.
fn xml_text(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(common::text(u, "ab <>&'\"\r\n\t]]>é\u{10000}", 24)?.chars().filter(|&c| xml_char_ok(c)).collect())
}

fn value(u: &mut Unstructured<'_>, depth: usize) -> Result<Value> {
    let kinds = if depth < 4 { 9 } else { 7 };
    Ok(match u.int_in_range(0..=kinds - 1)? {
        0 => Value::Int(u.arbitrary()?),
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Double(u.arbitrary()?),
        3 | 4 => Value::Str(xml_text(u)?),
        5 => Value::Bytes(u.arbitrary()?),
        6 => Value::Nil,
        7 => Value::Array((0..u.int_in_range(0..=3)?).map(|_| value(u, depth + 1)).collect::<Result<_>>()?),
        _ => Value::Struct(
            (0..u.int_in_range(0..=3)?).map(|_| Ok((xml_text(u)?, value(u, depth + 1)?))).collect::<Result<_>>()?,
        ),
    })
}

/// Doubles compare by their bits' meaning: NaN reads back as a NaN.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Double(x), Value::Double(y)) => x == y || (x.is_nan() && y.is_nan()),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Struct(x), Value::Struct(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((k, a), (l, b))| k == l && same(a, b))
        }
        _ => a == b,
    }
}

fn space(u: &mut Unstructured<'_>, xml: &mut String) -> Result<()> {
    if u.ratio(1u8, 4u8)? {
        xml.push_str(u.choose(&["\n", " ", "\n  ", "\t"])?);
    }
    Ok(())
}

/// Text as XML: each character escaped or literal, or the whole in CDATA when it does not hold `]]>`.
fn write_text(u: &mut Unstructured<'_>, xml: &mut String, text: &str) -> Result<()> {
    if !text.contains("]]>") && !text.contains('\r') && u.ratio(1u8, 4u8)? {
        xml.push_str("<![CDATA[");
        xml.push_str(text);
        xml.push_str("]]>");
        return Ok(());
    }
    for c in text.chars() {
        match c {
            '&' => xml.push_str("&amp;"),
            '<' => xml.push_str("&lt;"),
            // A literal CR would be read as LF; `>` must be escaped after `]]` only.
            '\r' => xml.push_str("&#13;"),
            '>' if xml.ends_with("]]") || u.arbitrary()? => xml.push_str("&gt;"),
            c if u.ratio(1u8, 8u8)? => xml.push_str(&format!("&#x{:x};", c as u32)),
            c => xml.push(c),
        }
    }
    Ok(())
}

fn write_value(u: &mut Unstructured<'_>, xml: &mut String, value: &Value) -> Result<()> {
    xml.push_str("<value>");
    match value {
        Value::Int(i) => {
            let tag =
                if i32::try_from(*i).is_ok() { *u.choose(&["int", "i4", "i8"])? } else { *u.choose(&["int", "i8"])? };
            xml.push_str(&format!("<{tag}>{i}</{tag}>"));
        }
        Value::Bool(b) => xml.push_str(if *b { "<boolean>1</boolean>" } else { "<boolean>0</boolean>" }),
        // `{:?}` writes the shortest text that parses back to the same f64 (and `inf`, `NaN`, which Rust reads).
        Value::Double(d) => xml.push_str(&format!("<double>{d:?}</double>")),
        Value::Str(s) => {
            // A string without a type element is a string too (but then whitespace around it would be its own).
            let typed = u.arbitrary::<bool>()? || s.is_empty();
            if typed {
                xml.push_str("<string>");
            }
            write_text(u, xml, s)?;
            if typed {
                xml.push_str("</string>");
            }
        }
        Value::Bytes(b) => {
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::STANDARD.encode(b);
            xml.push_str("<base64>");
            // Python's xmlrpc wraps base64 at 76 columns.
            for (i, chunk) in encoded.as_bytes().chunks(76).enumerate() {
                if i > 0 {
                    xml.push('\n');
                }
                xml.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
            }
            xml.push_str("</base64>");
        }
        Value::Nil => xml.push_str("<nil/>"),
        Value::Array(items) => {
            xml.push_str("<array>");
            space(u, xml)?;
            xml.push_str("<data>");
            for item in items {
                space(u, xml)?;
                write_value(u, xml, item)?;
            }
            space(u, xml)?;
            xml.push_str("</data></array>");
        }
        Value::Struct(members) => {
            xml.push_str("<struct>");
            for (name, value) in members {
                space(u, xml)?;
                xml.push_str("<member><name>");
                write_text(u, xml, name)?;
                xml.push_str("</name>");
                space(u, xml)?;
                write_value(u, xml, value)?;
                xml.push_str("</member>");
            }
            space(u, xml)?;
            xml.push_str("</struct>");
        }
    }
    xml.push_str("</value>");
    Ok(())
}
