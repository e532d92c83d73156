//! The little of XML-RPC that Func needs: a `methodCall` with string, int and base64 parameters, and a
//! `methodResponse` holding a value or a fault. Responses are parsed with roxmltree, which refuses DTDs (no entity
//! expansion); the caller bounds their size.

use std::fmt::Write as _;

/// A parameter of a call.
pub enum Param<'a> {
    Str(&'a str),
    Int(i64),
    /// Bytes sent as a base64 *string*, as Func's copyfile expects (`filebuf` was base64 text, not `<base64>`).
    Base64Text(&'a [u8]),
}

/// A value of a response.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Bool(bool),
    Double(f64),
    Str(String),
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    Struct(Vec<(String, Value)>),
    Nil,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RpcError {
    #[error("XML-RPC fault {code}: {message}")]
    Fault { code: i64, message: String },
    #[error("not an XML-RPC answer: {0}")]
    Malformed(String),
}

/// Whether `c` can be carried in an XML 1.0 document at all.
pub fn xml_char_ok(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

/// The request body. Strings must hold only [`xml_char_ok`] characters (checked by the caller).
pub fn method_call(method: &str, params: &[Param<'_>]) -> String {
    use base64::Engine as _;
    let mut xml = String::from("<?xml version=\"1.0\"?>\n<methodCall><methodName>");
    escape_into(&mut xml, method);
    xml.push_str("</methodName><params>");
    for param in params {
        xml.push_str("<param><value>");
        match param {
            Param::Str(s) => {
                xml.push_str("<string>");
                escape_into(&mut xml, s);
                xml.push_str("</string>");
            }
            Param::Int(i) => {
                // Infallible: writing to a String.
                let _ = write!(xml, "<int>{i}</int>");
            }
            Param::Base64Text(bytes) => {
                xml.push_str("<string>");
                xml.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
                xml.push_str("</string>");
            }
        }
        xml.push_str("</value></param>");
    }
    xml.push_str("</params></methodCall>\n");
    xml
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            // A literal CR would be read back as LF (XML line-end normalisation).
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

/// Deepest element nesting an answer may have. roxmltree's parser recurses once per level (and so does
/// `parse_value`): a few thousand levels, well within the response limit, overflowed the runtime thread's stack
/// and aborted the whole server (found by the `xmlrpc` fuzz target). Func's answers nest a few levels.
const MAX_DEPTH: usize = 128;

/// The value of a `methodResponse`, or its fault.
pub fn parse_response(body: &str) -> Result<Value, RpcError> {
    if nests_deeper_than(body, MAX_DEPTH) {
        return Err(RpcError::Malformed(format!("elements nest more than {MAX_DEPTH} deep")));
    }
    let doc = roxmltree::Document::parse(body).map_err(|e| RpcError::Malformed(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "methodResponse" {
        return Err(RpcError::Malformed(format!("root element is <{}>", root.tag_name().name())));
    }
    let first = elements(root).next().ok_or_else(|| RpcError::Malformed("empty methodResponse".into()))?;
    match first.tag_name().name() {
        "params" => {
            let value = elements(first)
                .next()
                .and_then(|param| elements(param).next())
                .ok_or_else(|| RpcError::Malformed("no value in params".into()))?;
            parse_value(value)
        }
        "fault" => {
            let value = elements(first).next().ok_or_else(|| RpcError::Malformed("empty fault".into()))?;
            let Value::Struct(members) = parse_value(value)? else {
                return Err(RpcError::Malformed("fault is not a struct".into()));
            };
            let get = |name: &str| members.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            let code = match get("faultCode") {
                Some(Value::Int(code)) => code,
                _ => 0,
            };
            let message = match get("faultString") {
                Some(Value::Str(s)) => s,
                other => format!("{other:?}"),
            };
            Err(RpcError::Fault { code, message })
        }
        other => Err(RpcError::Malformed(format!("unexpected <{other}>"))),
    }
}

/// Whether the elements of `body` nest more than `max` deep, by a scan of its tags that skips comments, CDATA,
/// processing instructions and quoted attribute values (a `>` or `/>` inside one ends no tag). A document that is
/// not XML may be counted wrong, but only after the point where roxmltree refuses it, so never deeper than roxmltree
/// would go.
fn nests_deeper_than(body: &str, max: usize) -> bool {
    let b = body.as_bytes();
    let past = |from: usize, end: &[u8]| {
        b.get(from..)
            .and_then(|rest| rest.windows(end.len()).position(|w| w == end))
            .map_or(b.len(), |p| from + p + end.len())
    };
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(at) = b.get(i..).and_then(|rest| rest.iter().position(|&c| c == b'<')).map(|p| i + p) {
        let rest = &b[at..];
        i = if rest.starts_with(b"<!--") {
            past(at + 4, b"-->")
        } else if rest.starts_with(b"<![CDATA[") {
            past(at + 9, b"]]>")
        } else if rest.starts_with(b"<?") {
            past(at + 2, b"?>")
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            at + 2
        } else if rest.starts_with(b"<!") {
            at + 2 // a DTD, which roxmltree refuses
        } else {
            // An opening tag, to its `>` outside quoted attribute values; `/>` closes it at once.
            let mut j = at + 1;
            let mut quote = None;
            while let Some(&c) = b.get(j) {
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) => {}
                    None if c == b'"' || c == b'\'' => quote = Some(c),
                    None if c == b'>' => break,
                    None => {}
                }
                j += 1;
            }
            if b.get(j.wrapping_sub(1)) != Some(&b'/') {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            j + 1
        };
    }
    false
}

fn elements<'a, 'i>(node: roxmltree::Node<'a, 'i>) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    node.children().filter(|n| n.is_element())
}

fn text_of(node: roxmltree::Node<'_, '_>) -> String {
    node.children().filter(|n| n.is_text()).filter_map(|n| n.text()).collect()
}

fn parse_value(value: roxmltree::Node<'_, '_>) -> Result<Value, RpcError> {
    let Some(typed) = elements(value).next() else {
        // A value without a type element is a string.
        return Ok(Value::Str(text_of(value)));
    };
    let text = || text_of(typed);
    let bad = |what: &str| RpcError::Malformed(format!("bad <{what}>: {:?}", text_of(typed)));
    Ok(match typed.tag_name().name() {
        "string" => Value::Str(text()),
        "int" | "i4" | "i8" => Value::Int(text().trim().parse().map_err(|_| bad("int"))?),
        "boolean" => Value::Bool(match text().trim() {
            "1" => true,
            "0" => false,
            _ => return Err(bad("boolean")),
        }),
        "double" => Value::Double(text().trim().parse().map_err(|_| bad("double"))?),
        "base64" => {
            use base64::Engine as _;
            let clean: String = text().chars().filter(|c| !c.is_ascii_whitespace()).collect();
            Value::Bytes(base64::engine::general_purpose::STANDARD.decode(clean).map_err(|_| bad("base64"))?)
        }
        "nil" => Value::Nil,
        "array" => {
            let data = elements(typed).next().ok_or_else(|| bad("array"))?;
            Value::Array(elements(data).map(parse_value).collect::<Result<_, _>>()?)
        }
        "struct" => {
            let mut members = Vec::new();
            for member in elements(typed) {
                let name = elements(member).find(|n| n.tag_name().name() == "name").map(text_of);
                let value = elements(member).find(|n| n.tag_name().name() == "value");
                match (name, value) {
                    (Some(name), Some(value)) => members.push((name, parse_value(value)?)),
                    _ => return Err(bad("member")),
                }
            }
            Value::Struct(members)
        }
        other => return Err(RpcError::Malformed(format!("unknown type <{other}>"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_escape_their_strings() {
        let xml =
            method_call("command.run", &[Param::Str("a<b & c>\r"), Param::Int(-3), Param::Base64Text(b"\xff\x00")]);
        assert!(xml.contains("<string>a&lt;b &amp; c&gt;&#13;</string>"), "{xml}");
        assert!(xml.contains("<int>-3</int>") && xml.contains("<string>/wA=</string>"), "{xml}");
        let parsed = roxmltree::Document::parse(&xml).unwrap();
        let s = parsed.descendants().find(|n| n.has_tag_name("string")).unwrap();
        assert_eq!(text_of(s), "a<b & c>\r", "an XML parser reads back exactly the string");
    }

    #[test]
    fn responses_and_faults() {
        let ok = "<?xml version='1.0'?><methodResponse><params><param><value><array><data>\
                  <value><int>0</int></value><value><string>out &amp; more\n</string></value><value>plain</value>\
                  </data></array></value></param></params></methodResponse>";
        assert_eq!(
            parse_response(ok).unwrap(),
            Value::Array(vec![Value::Int(0), Value::Str("out & more\n".into()), Value::Str("plain".into())])
        );
        let fault = "<methodResponse><fault><value><struct><member><name>faultCode</name><value><int>1</int></value>\
                     </member><member><name>faultString</name><value><string>boom</string></value></member>\
                     </struct></value></fault></methodResponse>";
        assert_eq!(parse_response(fault), Err(RpcError::Fault { code: 1, message: "boom".into() }));
        assert!(parse_response("<!DOCTYPE x [<!ENTITY a \"b\">]><methodResponse/>").is_err(), "no DTDs");
    }

    /// Found by the `xmlrpc` fuzz target: nesting deep enough overflowed the stack in roxmltree's parser.
    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = |levels: usize, open: &str, close: &str| {
            format!(
                "<methodResponse><params><param>{}{}</param></params></methodResponse>",
                open.repeat(levels),
                close.repeat(levels)
            )
        };
        let arrays = deep(100_000, "<value><array><data>", "</data></array></value>");
        assert_eq!(parse_response(&arrays), Err(RpcError::Malformed("elements nest more than 128 deep".into())));
        // Neither `/>` nor `>` in an attribute value, nor tags in comments and CDATA, hide a level.
        let hidden = deep(100_000, "<value a='/>' b=\">\"><!-- </x> --><![CDATA[</y>]]>", "</value>");
        assert!(parse_response(&hidden).is_err());
        // Siblings are not nesting.
        let wide = format!("<methodResponse><params><param><value><array><data>{}</data></array></value></param></params></methodResponse>", "<value><nil/></value>".repeat(1000));
        assert_eq!(parse_response(&wide).map(|v| matches!(v, Value::Array(a) if a.len() == 1000)), Ok(true));
        let nested = deep(30, "<value><array><data>", "</data></array></value>");
        assert!(parse_response(&nested).is_ok(), "Func's own answers nest far less, but 30 arrays still read");
    }
}
