//! gRPC request bodies over untrusted bytes: the length-prefixed framing read in arbitrary
//! chunks, and each message decoded with the sample service's descriptors into string fields
//! with paths. None may panic, loop or allocate beyond the message size limit.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use apiguard_policy::grpc::{Descriptors, GrpcSettings, MessageInspector};
use libfuzzer_sys::fuzz_target;

fn settings() -> &'static GrpcSettings {
    static SETTINGS: OnceLock<GrpcSettings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let proto = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto/sample.proto");
        GrpcSettings {
            descriptors: Some(Arc::new(
                Descriptors::from_protos(&[proto], &[]).expect("proto/sample.proto"),
            )),
            max_message_bytes: 64 * 1024,
            ..GrpcSettings::default()
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    for method in ["CreateOrders", "Chat", "GetOrder", "Unknown"] {
        let path = format!("/apiguard.sample.v1.Orders/{method}");
        let mut inspector = MessageInspector::new(settings(), &path);
        let cut = usize::from(split).min(body.len());
        let mut fields = 0usize;
        let result = inspector
            .feed(&body[..cut], |f| {
                fields += f.len();
                Ok(())
            })
            .and_then(|()| {
                inspector.feed(&body[cut..], |f| {
                    fields += f.len();
                    Ok(())
                })
            });
        if result.is_ok() {
            let _ = inspector.finish();
        }
        assert!(fields <= body.len());
    }
});
