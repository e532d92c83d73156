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

/// The value of a `methodResponse`, or its fault.
pub fn parse_response(body: &str) -> Result<Value, RpcError> {
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
}
