//! Proto descriptors of the services behind a route: compiled from `.proto` files at
//! configuration load (protox, a pure-Rust protobuf compiler) or read from a
//! `FileDescriptorSet` file (`protoc --descriptor_set_out --include_imports`, `buf build -o`).
//! They give the methods a route serves (its allowlist) and each method's request message
//! type, to decode request messages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost_reflect::{DescriptorPool, MessageDescriptor};

/// A method's request side.
#[derive(Debug, Clone)]
pub struct MethodInfo {
    /// The request message type.
    pub input: MessageDescriptor,
    /// Whether the client sends a stream of messages (client streaming or bidirectional).
    pub client_streaming: bool,
}

/// The methods of every service in a set of descriptors, by `package.Service/Method`.
#[derive(Debug, Clone, Default)]
pub struct Descriptors {
    methods: BTreeMap<String, MethodInfo>,
}

impl Descriptors {
    /// Compiles `.proto` files. Imports are looked up in `includes` (the files' own
    /// directories when empty) and among the well-known `google/protobuf/*.proto` files.
    pub fn from_protos(files: &[PathBuf], includes: &[PathBuf]) -> Result<Self, String> {
        let includes: Vec<PathBuf> = if includes.is_empty() {
            let mut dirs: Vec<PathBuf> = files
                .iter()
                .map(|f| {
                    f.parent()
                        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
                })
                .collect();
            dirs.sort();
            dirs.dedup();
            dirs
        } else {
            includes.to_vec()
        };
        let mut compiler = protox::Compiler::new(&includes).map_err(|e| e.to_string())?;
        compiler.include_imports(true);
        compiler.open_files(files).map_err(|e| e.to_string())?;
        Self::from_pool(&compiler.descriptor_pool())
    }

    /// Reads a serialized `google.protobuf.FileDescriptorSet` (with its imports included).
    pub fn from_descriptor_set(bytes: &[u8]) -> Result<Self, String> {
        let pool = DescriptorPool::decode(bytes).map_err(|e| e.to_string())?;
        Self::from_pool(&pool)
    }

    fn from_pool(pool: &DescriptorPool) -> Result<Self, String> {
        let mut methods = BTreeMap::new();
        for service in pool.services() {
            for method in service.methods() {
                methods.insert(
                    format!("{}/{}", service.full_name(), method.name()),
                    MethodInfo {
                        input: method.input(),
                        client_streaming: method.is_client_streaming(),
                    },
                );
            }
        }
        if methods.is_empty() {
            return Err("the descriptors define no service method".into());
        }
        Ok(Descriptors { methods })
    }

    /// The method named `package.Service/Method`.
    pub fn method(&self, name: &str) -> Option<&MethodInfo> {
        self.methods.get(name)
    }

    /// Every method, as `package.Service/Method`.
    pub fn method_names(&self) -> impl Iterator<Item = &str> {
        self.methods.keys().map(String::as_str)
    }
}
