//! apiguard's zero-trust and integrity stages: rate limiting (stage 3: GCRA per client, key,
//! identity and route, optionally shared between replicas through Redis), authentication
//! (stage 4: JWT with JWKS, API keys, mTLS identity, continuous verification), authorisation
//! (stage 5: Cedar policies and just-in-time grants) and positive security (stage 6: OpenAPI
//! 3.0/3.1 request and response validation; stage 7: GraphQL limits and cost budgets, gRPC
//! method allowlists, message limits and decoding), integrity (HTTP message signatures and
//! Content-Digest) and response inspection (sensitive data leaving the API). See
//! docs/policy.md.

#![forbid(unsafe_code)]

pub mod authn;
pub mod authz;
pub mod graphql;
pub mod grpc;
pub mod integrity;
pub mod openapi;
pub mod ratelimit;
pub mod response;

pub use authn::{AuthnRuntime, AuthnStage};
pub use graphql::GraphqlStage;
pub use grpc::GrpcStage;
pub use integrity::{IntegrityRuntime, IntegrityStage};
pub use ratelimit::{RateLimitStage, RateLimits};
pub use response::{ResponseMode, ResponseScanner};
