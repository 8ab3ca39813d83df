use std::net::SocketAddr;
use std::path::PathBuf;

use apiguard_model::ClientInfo;
use http::{HeaderMap, Method, Uri, Version};
use prost::Message as _;
use prost_reflect::{DynamicMessage, Value};

use super::*;

fn sample() -> Descriptors {
    let proto = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto/sample.proto");
    Descriptors::from_protos(&[proto], &[]).expect("proto/sample.proto compiles")
}

fn head(stage: &GrpcStage, path: &str, content_type: &str) -> Option<String> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
    let uri: Uri = path.parse().unwrap();
    let client = ClientInfo {
        peer: SocketAddr::from(([127, 0, 0, 1], 1)),
        tls: false,
        client_cert_subject: None,
        client_cert_sans: Vec::new(),
    };
    let view = RequestView {
        method: &Method::POST,
        uri: &uri,
        version: Version::HTTP_2,
        headers: &headers,
        client: &client,
        route: "grpc",
        request_id: "t",
        body: None,
    };
    match stage.inspect(&view, &mut RequestContext::default()) {
        Outcome::Continue => None,
        Outcome::Block { finding, .. } => Some(finding.rule_id.into_owned()),
        other => panic!("{other:?}"),
    }
}

fn framed(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

#[test]
fn descriptors_give_methods_and_streaming() {
    let d = sample();
    let names: Vec<&str> = d.method_names().collect();
    assert_eq!(
        names,
        [
            "apiguard.sample.v1.Orders/Chat",
            "apiguard.sample.v1.Orders/CreateOrders",
            "apiguard.sample.v1.Orders/GetOrder",
            "apiguard.sample.v1.Orders/ListOrders",
        ]
    );
    let create = d.method("apiguard.sample.v1.Orders/CreateOrders").unwrap();
    assert!(create.client_streaming);
    assert_eq!(create.input.full_name(), "apiguard.sample.v1.NewOrder");
    assert!(
        !d.method("apiguard.sample.v1.Orders/GetOrder")
            .unwrap()
            .client_streaming
    );
    assert!(Descriptors::from_descriptor_set(b"\x0a\x03abc").is_err());
    assert!(Descriptors::from_protos(&[PathBuf::from("/nonexistent/x.proto")], &[]).is_err());
}

#[test]
fn head_checks_allowlist_reflection_and_content_type() {
    let d = sample();
    let stage = GrpcStage {
        settings: Arc::new(GrpcSettings {
            allowlist: Some(MethodAllowlist::new(d.method_names()).unwrap()),
            ..GrpcSettings::default()
        }),
    };
    let grpc = "application/grpc";
    assert_eq!(
        head(&stage, "/apiguard.sample.v1.Orders/GetOrder", grpc),
        None
    );
    assert_eq!(
        head(&stage, "/apiguard.sample.v1.Orders/DeleteOrder", grpc).as_deref(),
        Some("grpc.method")
    );
    assert_eq!(
        head(&stage, "/not/a/method", grpc).as_deref(),
        Some("grpc.method")
    );
    assert_eq!(
        head(
            &stage,
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            grpc
        )
        .as_deref(),
        Some("grpc.reflection")
    );
    assert_eq!(
        head(
            &stage,
            "/apiguard.sample.v1.Orders/GetOrder",
            "application/json"
        )
        .as_deref(),
        Some("grpc.content_type")
    );
    let open = GrpcStage {
        settings: Arc::new(GrpcSettings {
            allowlist: Some(MethodAllowlist::new(["apiguard.sample.v1.Orders/*"]).unwrap()),
            allow_reflection: true,
            ..GrpcSettings::default()
        }),
    };
    assert_eq!(
        head(&open, "/apiguard.sample.v1.Orders/Anything", grpc),
        None
    );
    assert_eq!(
        head(
            &open,
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            grpc
        ),
        None
    );
    assert!(MethodAllowlist::new(["Orders"]).is_err());
    assert!(MethodAllowlist::new(["a.B/*x"]).is_err());
}

#[test]
fn messages_are_decoded_into_string_fields_with_paths() {
    let d = Arc::new(sample());
    let method = d.method("apiguard.sample.v1.Orders/CreateOrders").unwrap();
    let mut order = DynamicMessage::new(method.input.clone());
    order.set_field_by_name("user_id", Value::U64(7));
    order.set_field_by_name("item", Value::String("1' or '1'='1".into()));
    let bytes = order.encode_to_vec();
    let settings = GrpcSettings {
        descriptors: Some(d.clone()),
        max_message_bytes: 64,
        ..GrpcSettings::default()
    };
    let mut inspector = MessageInspector::new(&settings, "/apiguard.sample.v1.Orders/CreateOrders");
    assert!(inspector.decodes());
    let mut seen = Vec::new();
    let body = [framed(&bytes), framed(&bytes)].concat();
    inspector
        .feed(&body, |fields| {
            seen.push(fields);
            Ok(())
        })
        .unwrap();
    inspector.finish().unwrap();
    assert_eq!(inspector.messages(), 2);
    assert_eq!(seen[0], [("item".to_owned(), "1' or '1'='1".to_owned())]);
    // Not a NewOrder: field 2 (item, a string) as a varint.
    let mut inspector = MessageInspector::new(&settings, "/apiguard.sample.v1.Orders/CreateOrders");
    let err = inspector
        .feed(&framed(&[0x10, 0x01]), |_| Ok(()))
        .unwrap_err();
    assert_eq!(err.rule, "grpc.decode");
    // Compressed messages cannot be decoded.
    let mut inspector = MessageInspector::new(&settings, "/apiguard.sample.v1.Orders/CreateOrders");
    let mut compressed = framed(&bytes);
    compressed[0] = 1;
    assert_eq!(
        inspector.feed(&compressed, |_| Ok(())).unwrap_err().rule,
        "grpc.compressed"
    );
    // Over the size limit.
    let mut inspector = MessageInspector::new(&settings, "/apiguard.sample.v1.Orders/CreateOrders");
    let err = inspector.feed(&framed(&[0; 65]), |_| Ok(())).unwrap_err();
    assert_eq!(err.code, GrpcCode::ResourceExhausted);
    // A method without descriptors is only sized.
    let inspector = MessageInspector::new(&settings, "/other.Svc/M");
    assert!(!inspector.decodes());
}

#[test]
fn grpc_messages_are_percent_encoded() {
    assert_eq!(percent_encode_message("50% of é\n"), "50%25 of %C3%A9%0A");
    assert_eq!(
        code_for_rule("grpc.message_size"),
        Some(GrpcCode::ResourceExhausted)
    );
    assert_eq!(code_for_rule("sqli.tokenizer"), None);
}
