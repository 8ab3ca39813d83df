//! The string fields of a decoded request message, with their paths (`item`,
//! `address.street`, `tags[2]`, `labels[env]`), for the detection engine: an injection inside
//! a protobuf string reaches the application as plainly as one in a JSON body.

use prost_reflect::{DynamicMessage, MapKey, MessageDescriptor, Value};

/// Longest map key written into a path; longer keys are cut (the key itself is still
/// inspected as a value).
const MAX_KEY_IN_PATH: usize = 64;

/// Decodes `bytes` as a `descriptor` message and collects up to `max_fields` string values
/// (and string map keys). `Err` when the bytes are not such a message. Recursion is bounded
/// by prost's decoding depth limit (100 nested messages).
pub fn string_fields(
    descriptor: &MessageDescriptor,
    bytes: &[u8],
    max_fields: usize,
) -> Result<Vec<(String, String)>, prost::DecodeError> {
    let message = DynamicMessage::decode(descriptor.clone(), bytes)?;
    let mut out = Vec::new();
    collect_message(&message, "", max_fields, &mut out);
    Ok(out)
}

fn collect_message(
    message: &DynamicMessage,
    prefix: &str,
    max: usize,
    out: &mut Vec<(String, String)>,
) {
    for (field, value) in message.fields() {
        let path = if prefix.is_empty() {
            field.name().to_owned()
        } else {
            format!("{prefix}.{}", field.name())
        };
        collect_value(value, path, max, out);
        if out.len() >= max {
            return;
        }
    }
}

fn collect_value(value: &Value, path: String, max: usize, out: &mut Vec<(String, String)>) {
    if out.len() >= max {
        return;
    }
    match value {
        Value::String(text) => out.push((path, text.clone())),
        Value::Message(message) => collect_message(message, &path, max, out),
        Value::List(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_value(item, format!("{path}[{i}]"), max, out);
            }
        }
        Value::Map(entries) => {
            // Sorted, so that which entries fit under `max` does not depend on hashing.
            let mut entries: Vec<_> = entries.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            for (key, item) in entries {
                let key_text = match key {
                    MapKey::String(k) => {
                        if out.len() < max {
                            out.push((format!("{path}{{key}}"), k.clone()));
                        }
                        let mut cut = k.len().min(MAX_KEY_IN_PATH);
                        while !k.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        k[..cut].to_owned()
                    }
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                };
                collect_value(item, format!("{path}[{key_text}]"), max, out);
            }
        }
        _ => {}
    }
}
