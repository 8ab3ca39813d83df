//! apiguard's zero-trust and integrity stages: rate limiting (stage 3: GCRA per client, key,
//! identity and route, optionally shared between replicas through Redis), authentication
//! (stage 4: JWT with JWKS, API keys, mTLS identity, continuous verification), authorisation
//! (stage 5: Cedar policies and just-in-time grants) and positive security (stage 6: OpenAPI
//! 3.0/3.1 request and response validation). See docs/policy.md.

#![forbid(unsafe_code)]

pub mod authn;
pub mod authz;
pub mod openapi;
pub mod ratelimit;

pub use authn::{AuthnRuntime, AuthnStage};
pub use ratelimit::{RateLimitStage, RateLimits};
