//! apiguard's zero-trust stages. Authentication (stage 4: JWT with JWKS, API keys, mTLS
//! identity, continuous verification) and rate limiting (stage 3: GCRA per client, key,
//! identity and route, optionally shared between replicas through Redis). See docs/policy.md.

#![forbid(unsafe_code)]

pub mod authn;
pub mod ratelimit;

pub use authn::{AuthnRuntime, AuthnStage};
pub use ratelimit::{RateLimitStage, RateLimits};
