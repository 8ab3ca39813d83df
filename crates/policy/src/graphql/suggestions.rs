//! Field suggestions leak the schema: a server with introspection off still answers
//! `Unknown field "passwrd" on type "User". Did you mean "password"?`, so the schema can be
//! enumerated by guessing. In production mode the gateway removes the suggestion sentence from
//! the `errors[].message` of GraphQL responses (one response or a batch array).

/// The suggestion sentence's start, as graphql-js, async-graphql, Juniper, gqlgen and
/// Hot Chocolate write it.
const MARKER: &str = "Did you mean";

/// The response body with every suggestion removed from error messages, or `None` when it
/// is not a GraphQL JSON response or has no suggestion (the body then goes out unchanged).
pub fn strip_suggestions(body: &[u8]) -> Option<Vec<u8>> {
    // Cheap refusal first: most responses carry no suggestion at all.
    if !body.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()) {
        return None;
    }
    let mut json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let changed = match &mut json {
        serde_json::Value::Array(responses) => responses
            .iter_mut()
            .fold(false, |changed, r| strip_response(r) | changed),
        response => strip_response(response),
    };
    changed.then(|| serde_json::to_vec(&json).ok()).flatten()
}

fn strip_response(response: &mut serde_json::Value) -> bool {
    let Some(errors) = response.get_mut("errors").and_then(|e| e.as_array_mut()) else {
        return false;
    };
    let mut changed = false;
    for error in errors {
        if let Some(serde_json::Value::String(message)) = error.get_mut("message")
            && let Some(stripped) = strip_message(message)
        {
            *message = stripped;
            changed = true;
        }
    }
    changed
}

/// The message without its "Did you mean …?" sentences.
pub fn strip_message(message: &str) -> Option<String> {
    if !message.contains(MARKER) {
        return None;
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(MARKER) {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        // The sentence ends at its question mark (suggested names are quoted identifiers,
        // which never contain one); without one it runs to the end.
        rest = after.find('?').map_or("", |end| &after[end + 1..]);
    }
    out.push_str(rest);
    Some(out.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_suggestions_from_error_messages_only() {
        let body = br#"{"data":null,"errors":[{"message":"Unknown field \"nme\" on type \"User\". Did you mean \"name\"?","locations":[{"line":1,"column":9}]},{"message":"plain"}]}"#;
        let out = strip_suggestions(body).expect("changed");
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            json["errors"][0]["message"],
            "Unknown field \"nme\" on type \"User\"."
        );
        assert_eq!(json["errors"][0]["locations"][0]["line"], 1);
        assert_eq!(json["errors"][1]["message"], "plain");
    }

    #[test]
    fn batches_and_sentences_in_the_middle() {
        let body = br#"[{"data":{"a":1}},{"errors":[{"message":"Cannot query field \"x\". Did you mean \"y\" or \"z\"? See the docs."}]}]"#;
        let out = strip_suggestions(body).expect("changed");
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            json[1]["errors"][0]["message"],
            "Cannot query field \"x\".  See the docs."
        );
        assert_eq!(json[0]["data"]["a"], 1);
    }

    #[test]
    fn leaves_other_bodies_alone() {
        assert_eq!(strip_suggestions(br#"{"data":{"a":"Did you mean"}}"#), None);
        assert_eq!(strip_suggestions(b"Did you mean, not JSON"), None);
        assert_eq!(strip_suggestions(br#"{"data":{"a":1}}"#), None);
    }
}
