//! gRPC inspection, part of stage 7 of the pipeline (protocol inspection). On a route declared
//! as gRPC:
//!
//! - the head ([`GrpcStage`]): only `application/grpc*` requests; the method must be on the
//!   route's allowlist (its proto descriptors' methods, or a configured list) and server
//!   reflection (`grpc.reflection.*`) is refused unless allowed. Refusals answer
//!   UNIMPLEMENTED, as a server without the method would.
//! - the body ([`MessageInspector`], driven by the gateway as the body arrives): each
//!   message's 5-byte prefix is checked against the size limit (RESOURCE_EXHAUSTED); with
//!   descriptors, each message is decoded and its string fields handed over for attack
//!   detection.
//!
//! Every refusal is a [`Finding`] of class `grpc_policy` whose rule maps to a gRPC status code
//! ([`code_for_rule`]); the gateway answers it as a trailers-only gRPC response.

mod descriptors;
mod fields;
mod frames;

use std::collections::BTreeSet;
use std::sync::Arc;

use apiguard_model::{Finding, Outcome, RequestContext, RequestView, Severity, Stage};
use http::header;

pub use descriptors::{Descriptors, MethodInfo};
pub use fields::string_fields;
pub use frames::{FrameReader, Message};

/// The class of every gRPC finding.
/// Policy refusals (allowlist, sizes, framing), not attacks: never reported to a hub.
pub const CLASS: &str = "grpc_policy";

/// The services of gRPC server reflection (v1 and v1alpha) start with this.
const REFLECTION_PREFIX: &str = "grpc.reflection.";

/// String fields handed to detection per message, at most.
pub const MAX_FIELDS_PER_MESSAGE: usize = 1_000;

/// The gRPC status codes the gateway answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcCode {
    InvalidArgument = 3,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
}

impl GrpcCode {
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A refusal of a gRPC request: the finding's rule, the status code and the message sent in
/// `grpc-message` (it names the limit, never the request's content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: &'static str,
    pub code: GrpcCode,
    pub message: String,
}

impl Violation {
    pub fn new(rule: &'static str, code: GrpcCode, message: impl Into<String>) -> Self {
        Violation {
            rule,
            code,
            message: message.into(),
        }
    }

    /// The finding recorded for this refusal.
    pub fn finding(&self) -> Finding {
        Finding {
            rule_id: self.rule.into(),
            class: CLASS.into(),
            severity: Severity::Critical,
            score: Severity::Critical.score(),
            target: "grpc".into(),
            evidence: self.message.clone(),
        }
    }
}

/// The status code of a finding's rule, when it is a gRPC refusal.
pub fn code_for_rule(rule: &str) -> Option<GrpcCode> {
    Some(match rule {
        "grpc.method" | "grpc.reflection" | "grpc.compressed" => GrpcCode::Unimplemented,
        "grpc.message_size" => GrpcCode::ResourceExhausted,
        "grpc.decode" => GrpcCode::InvalidArgument,
        "grpc.frame" => GrpcCode::Internal,
        _ => return None,
    })
}

/// `grpc-message` is percent-encoded: bytes outside printable ASCII, and `%`.
pub fn percent_encode_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The methods a route serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MethodAllowlist {
    /// `package.Service/Method`.
    methods: BTreeSet<String>,
    /// `package.Service` whose every method is allowed (written `package.Service/*`).
    services: BTreeSet<String>,
}

impl MethodAllowlist {
    /// From `package.Service/Method` and `package.Service/*` entries (a leading `/` is
    /// allowed); `Err` names a malformed entry.
    pub fn new<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut list = MethodAllowlist::default();
        for entry in entries {
            let name = entry.strip_prefix('/').unwrap_or(entry);
            let Some((service, method)) = split_method(name) else {
                return Err(format!(
                    "`{entry}` is not `package.Service/Method` or `package.Service/*`"
                ));
            };
            if method == "*" {
                list.services.insert(service.to_owned());
            } else {
                list.methods.insert(name.to_owned());
            }
        }
        Ok(list)
    }

    pub fn allows(&self, service: &str, name: &str) -> bool {
        self.services.contains(service) || self.methods.contains(name)
    }

    pub fn len(&self) -> usize {
        self.methods.len() + self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `package.Service/Method` split in two, when it is that.
fn split_method(name: &str) -> Option<(&str, &str)> {
    let (service, method) = name.split_once('/')?;
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'*'))
    };
    (valid(service)
        && valid(method)
        && !service.contains('*')
        && (method == "*" || !method.contains('*')))
    .then_some((service, method))
}

/// A route's gRPC settings, compiled.
#[derive(Debug)]
pub struct GrpcSettings {
    /// Methods served; `None`: any.
    pub allowlist: Option<MethodAllowlist>,
    pub allow_reflection: bool,
    /// Largest request message (its 5-byte prefix's length).
    pub max_message_bytes: u32,
    /// With descriptors, request messages are decoded for attack detection.
    pub descriptors: Option<Arc<Descriptors>>,
}

impl Default for GrpcSettings {
    fn default() -> Self {
        GrpcSettings {
            allowlist: None,
            allow_reflection: false,
            max_message_bytes: 4 * 1024 * 1024,
            descriptors: None,
        }
    }
}

/// The method a request names: `package.Service/Method` from the path
/// `/package.Service/Method`.
pub fn method_of(path: &str) -> Option<&str> {
    let name = path.strip_prefix('/')?;
    split_method(name).filter(|(_, m)| *m != "*").map(|_| name)
}

/// The head checks of one gRPC route.
#[derive(Debug)]
pub struct GrpcStage {
    pub settings: Arc<GrpcSettings>,
}

impl GrpcStage {
    /// Checks the head: content type, method name, reflection, allowlist.
    pub fn check_head(&self, request: &RequestView<'_>) -> Result<(), Outcome> {
        let grpc = request
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
        if !grpc {
            return Err(Outcome::Block {
                status: 415,
                finding: Violation::new(
                    "grpc.content_type",
                    GrpcCode::InvalidArgument,
                    "this route serves gRPC only (content-type application/grpc)",
                )
                .finding(),
            });
        }
        let refuse = |v: Violation| Outcome::Block {
            status: 403,
            finding: v.finding(),
        };
        let Some(name) = method_of(request.path()) else {
            return Err(refuse(Violation::new(
                "grpc.method",
                GrpcCode::Unimplemented,
                "the path is not a gRPC method (/package.Service/Method)",
            )));
        };
        let service = name.split('/').next().unwrap_or_default();
        if service.starts_with(REFLECTION_PREFIX) {
            if self.settings.allow_reflection {
                return Ok(());
            }
            return Err(refuse(Violation::new(
                "grpc.reflection",
                GrpcCode::Unimplemented,
                "server reflection is disabled on this route",
            )));
        }
        if let Some(list) = &self.settings.allowlist
            && !list.allows(service, name)
        {
            return Err(refuse(Violation::new(
                "grpc.method",
                GrpcCode::Unimplemented,
                format!("method {name} is not served on this route"),
            )));
        }
        Ok(())
    }
}

impl Stage for GrpcStage {
    fn name(&self) -> &'static str {
        "grpc"
    }

    /// Method allowlists and size limits are policy, not detection.
    fn enforced_in_detect_only(&self) -> bool {
        true
    }

    fn inspect(&self, request: &RequestView<'_>, _ctx: &mut RequestContext) -> Outcome {
        match self.check_head(request) {
            Ok(()) => Outcome::Continue,
            Err(outcome) => outcome,
        }
    }
}

/// Inspects the messages of one request body as its bytes arrive.
#[derive(Debug)]
pub struct MessageInspector {
    reader: FrameReader,
    /// The request type, when the route has descriptors for this method.
    input: Option<prost_reflect::MessageDescriptor>,
    method: String,
}

impl MessageInspector {
    /// For a request to `path` on a route with `settings`.
    pub fn new(settings: &GrpcSettings, path: &str) -> Self {
        let method = method_of(path).unwrap_or_default().to_owned();
        let input = settings
            .descriptors
            .as_ref()
            .and_then(|d| d.method(&method))
            .map(|m| m.input.clone());
        MessageInspector {
            reader: FrameReader::new(settings.max_message_bytes, input.is_some()),
            input,
            method,
        }
    }

    /// Whether messages are decoded (the route has descriptors for this method).
    pub fn decodes(&self) -> bool {
        self.input.is_some()
    }

    /// Reads a chunk of the body; for every message it completes, `on_fields` gets the
    /// message's string fields (only when decoding) and may refuse. Stops at the first
    /// violation.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut on_fields: impl FnMut(Vec<(String, String)>) -> Result<(), Violation>,
    ) -> Result<(), Violation> {
        let input = self.input.as_ref();
        let method = &self.method;
        self.reader.feed(chunk, |message| {
            let Some(input) = input else {
                return Ok(());
            };
            if message.compressed {
                return Err(Violation::new(
                    "grpc.compressed",
                    GrpcCode::Unimplemented,
                    "compressed request messages cannot be inspected on this route; send them uncompressed",
                ));
            }
            let fields = string_fields(input, message.bytes, MAX_FIELDS_PER_MESSAGE)
                .map_err(|_| {
                    Violation::new(
                        "grpc.decode",
                        GrpcCode::InvalidArgument,
                        format!(
                            "the request message is not a valid {} for {method}",
                            input.full_name()
                        ),
                    )
                })?;
            on_fields(fields)
        })
    }

    /// The body ended.
    pub fn finish(&self) -> Result<(), Violation> {
        self.reader.finish()
    }

    /// Messages read so far.
    pub fn messages(&self) -> u64 {
        self.reader.messages
    }
}

#[cfg(test)]
mod tests;
