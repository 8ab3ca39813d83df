//! Positive security with OpenAPI 3.0 and 3.1: each upstream may have a specification;
//! requests are validated against it (path, query, header and cookie parameters with
//! OpenAPI's serialisation and type coercion, content type, body schema; unknown endpoints
//! allowed, logged or blocked) and responses optionally too (status, content type, schema,
//! and fields the specification does not declare).
//!
//! Schemas are compiled once per load with `jsonschema` (draft 4 for 3.0 after rewriting
//! `nullable`, 2020-12 for 3.1); `$ref`s resolve within the document only.

mod path;
mod response;
mod schema;
mod spec;
mod stage;
mod validate;

pub use path::{normalize_path, percent_decode};
pub use schema::OpenApiVersion;
pub use spec::{Lookup, Operation, Spec, SpecError};
pub use stage::{OpenApiMode, OpenApiStage, ResponseValidation, UnknownEndpoints, finding};
pub use validate::Violation;
