//! apiguard's data plane: listeners, routing, the inspection pipeline, upstream pools, the
//! admin endpoint, hot reload.

#![forbid(unsafe_code)]

pub mod admin;
pub mod authn;
pub mod authz;
pub mod behavior;
pub mod body;
pub mod circuit;
pub mod config;
pub mod connpool;
pub mod detection;
pub mod enforcement;
pub mod headers;
pub mod heal;
pub mod identity;
pub mod listener;
pub mod load;
pub mod masking;
pub mod metrics;
pub mod openapi;
pub mod pipeline;
pub mod problem;
pub mod protocols;
pub mod proxy;
pub mod ratelimit;
pub mod router;
pub mod runtime;
pub mod sharing;
pub mod signatures;
pub mod snapshot;
pub mod throttle;
pub mod tls;
pub mod upstream;
pub mod worker;

pub use runtime::{Gateway, StartError, validate_file};
