//! Validating a request's parameters against a module's schema, before anything runs.

use abi_stable::std_types::RString;
use omserver_plugin_api::{Metadata, Param, ParamKind, ParamValue};
use serde_json::{Map, Value};

/// A parameter that failed validation: which one, and why, for a 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter {field}: {reason}")]
pub struct ParamError {
    pub field: String,
    pub reason: String,
}

fn error(field: &str, reason: impl Into<String>) -> ParamError {
    ParamError { field: field.to_owned(), reason: reason.into() }
}

/// Checks `given` against the module's schema and returns every parameter with a value (given or default).
///
/// Integers may come as JSON numbers or as strings of digits (the CLI's `k=v`); nothing else converts. Text is
/// matched against the whole pattern.
pub fn validate(meta: &Metadata, given: &Map<String, Value>) -> Result<Vec<Param>, ParamError> {
    if let Some(unknown) = given.keys().find(|k| !meta.params.iter().any(|p| p.name == k.as_str())) {
        return Err(error(unknown, format!("module {} has no such parameter", meta.id)));
    }
    let mut out = Vec::new();
    for spec in meta.params.iter() {
        let name = spec.name.as_str();
        let value = match (given.get(name), &spec.kind) {
            (None | Some(Value::Null), kind) => match default_of(kind) {
                Some(value) => value,
                None if spec.required => return Err(error(name, "is required")),
                None => continue,
            },
            (Some(value), ParamKind::Integer { min, max, .. }) => {
                let number = as_integer(value).ok_or_else(|| error(name, "must be a whole number"))?;
                if number < *min || number > *max {
                    return Err(error(name, format!("must be between {min} and {max}")));
                }
                ParamValue::Integer(number)
            }
            (Some(value), ParamKind::Choice { choices, .. }) => {
                let text = value.as_str().ok_or_else(|| error(name, "must be a string"))?;
                if !choices.iter().any(|c| c == text) {
                    let list: Vec<&str> = choices.iter().map(|c| c.as_str()).collect();
                    return Err(error(name, format!("must be one of {}", list.join(", "))));
                }
                ParamValue::Text(text.into())
            }
            (Some(value), ParamKind::Text { pattern, max_len, .. }) => {
                let text = value.as_str().ok_or_else(|| error(name, "must be a string"))?;
                if text.len() > *max_len as usize {
                    return Err(error(name, format!("must be at most {max_len} bytes")));
                }
                // The pattern compiled when the module was loaded; anchoring makes it match the whole value.
                let whole = regex::Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| error(name, format!("the module's pattern is invalid: {e}")))?;
                if !whole.is_match(text) {
                    return Err(error(name, format!("must match {pattern}")));
                }
                ParamValue::Text(text.into())
            }
        };
        out.push(Param { name: spec.name.clone(), value });
    }
    Ok(out)
}

fn default_of(kind: &ParamKind) -> Option<ParamValue> {
    match kind {
        ParamKind::Integer { default, .. } => default.into_option().map(ParamValue::Integer),
        ParamKind::Choice { default, .. } | ParamKind::Text { default, .. } => {
            default.as_ref().into_option().map(|d| ParamValue::Text(RString::from(d.as_str())))
        }
    }
}

fn as_integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        }
        _ => None,
    }
}

/// The validated parameters as a JSON object, for storage and display.
pub fn to_json(params: &[Param]) -> Value {
    let map = params
        .iter()
        .map(|p| {
            let value = match &p.value {
                ParamValue::Integer(n) => Value::from(*n),
                ParamValue::Text(t) => Value::from(t.as_str()),
            };
            (p.name.to_string(), value)
        })
        .collect();
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use omserver_plugin_api::ParamSpec;
    use serde_json::json;

    use super::*;

    fn schema() -> Metadata {
        Metadata::new(1001, "View system log", "1.0.0")
            .param(ParamSpec::integer("lines", 1, 10_000).default_integer(50))
            .param(ParamSpec::choice("service", &["nginx", "mysql"]).optional())
            .param(ParamSpec::text("tag", "[a-z]+", 8).optional())
    }

    fn check(given: Value) -> Result<Value, ParamError> {
        let given = given.as_object().cloned().unwrap_or_default();
        validate(&schema(), &given).map(|p| to_json(&p))
    }

    #[test]
    fn defaults_fill_in() {
        assert_eq!(check(json!({})).unwrap(), json!({"lines": 50}));
        assert_eq!(
            check(json!({"lines": "200", "service": "mysql"})).unwrap(),
            json!({"lines": 200, "service": "mysql"})
        );
    }

    #[test]
    fn injection_attempts_are_refused() {
        for bad in ["1; id", "1 /etc/shadow", "$(id)", "../../etc/passwd", "", "+5", "1.5", "0x10"] {
            let err = check(json!({ "lines": bad })).expect_err(bad);
            assert_eq!((err.field.as_str(), err.reason.as_str()), ("lines", "must be a whole number"), "{bad}");
        }
        for bad in ["nginx; id", "$(id)", "../../etc/passwd", "NGINX"] {
            assert_eq!(check(json!({ "service": bad })).unwrap_err().field, "service", "{bad}");
        }
        for bad in ["abc def", "abc\nid", "abcdefghi", "x$(id)"] {
            assert_eq!(check(json!({ "tag": bad })).unwrap_err().field, "tag", "{bad}");
        }
    }

    #[test]
    fn bounds_types_and_unknown_keys() {
        assert_eq!(check(json!({"lines": 0})).unwrap_err().reason, "must be between 1 and 10000");
        assert_eq!(check(json!({"lines": 10001})).unwrap_err().reason, "must be between 1 and 10000");
        assert_eq!(check(json!({"lines": true})).unwrap_err().reason, "must be a whole number");
        assert_eq!(check(json!({"service": 3})).unwrap_err().reason, "must be a string");
        assert_eq!(check(json!({"path": "/etc"})).unwrap_err().field, "path");
    }

    #[test]
    fn required_without_default() {
        let meta = Metadata::new(1007, "Restart", "1").param(ParamSpec::choice("service", &["nginx"]));
        let err = validate(&meta, &Map::new()).unwrap_err();
        assert_eq!(err.to_string(), "parameter service: is required");
    }
}
