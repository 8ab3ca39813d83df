//! Turns each upstream's `openapi:` section into a compiled specification, and each route's
//! validation stage and response check.

use std::collections::BTreeMap;
use std::sync::Arc;

use apiguard_policy::openapi::{
    OpenApiMode, OpenApiStage, ResponseValidation, Spec, UnknownEndpoints,
};

use crate::config::{
    Config, OpenApiConfig, OpenApiModeConfig, RouteConfig, UnknownEndpointsConfig,
};
use crate::load::Problem;

/// A compiled specification and its upstream's settings.
pub struct CompiledSpec {
    pub spec: Arc<Spec>,
    pub config: OpenApiConfig,
}

/// Compiles every upstream's specification. A file that cannot be read or compiled is a
/// problem naming the file, the place in it (line:column, or a JSON pointer) and the reason.
pub fn compile_openapi(
    config: &Config,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, CompiledSpec> {
    let mut specs = BTreeMap::new();
    for (name, upstream) in &config.upstreams {
        let Some(openapi) = &upstream.openapi else {
            continue;
        };
        let at = |message: String| {
            Problem::at(
                &openapi.spec,
                format!("upstream `{name}`: openapi: {message}"),
            )
        };
        if let Some(base) = &openapi.base_path
            && !base.starts_with('/')
        {
            problems.push(at(format!("base_path `{base}` must start with `/`")));
            continue;
        }
        if let Some(responses) = &openapi.responses
            && responses.max_body_bytes == 0
        {
            problems.push(at("responses.max_body_bytes must be at least 1".into()));
        }
        match Spec::load(&openapi.spec.value, openapi.base_path.as_deref()) {
            Ok(spec) => {
                specs.insert(
                    name.clone(),
                    CompiledSpec {
                        spec: Arc::new(spec),
                        config: openapi.clone(),
                    },
                );
            }
            Err(error) => problems.push(at(format!("{}: {error}", openapi.spec.value))),
        }
    }
    specs
}

/// The route's request validation stage, unless validation is off for it.
pub fn route_stage(
    specs: &BTreeMap<String, CompiledSpec>,
    route: &RouteConfig,
    body_limit: usize,
) -> Option<OpenApiStage> {
    let compiled = specs.get(&route.upstream.value)?;
    let mode = match route.openapi.mode.unwrap_or(compiled.config.mode) {
        OpenApiModeConfig::Enforce => OpenApiMode::Enforce,
        OpenApiModeConfig::Monitor => OpenApiMode::Monitor,
        OpenApiModeConfig::Off => return None,
    };
    let unknown = match route
        .openapi
        .unknown_endpoints
        .unwrap_or(compiled.config.unknown_endpoints)
    {
        UnknownEndpointsConfig::Allow => UnknownEndpoints::Allow,
        UnknownEndpointsConfig::Log => UnknownEndpoints::Log,
        UnknownEndpointsConfig::Block => UnknownEndpoints::Block,
    };
    Some(OpenApiStage {
        spec: compiled.spec.clone(),
        mode,
        unknown,
        body_limit,
    })
}

/// The route's response check, when its upstream asks for one.
pub fn route_responses(
    specs: &BTreeMap<String, CompiledSpec>,
    route: &RouteConfig,
) -> Option<Arc<ResponseValidation>> {
    let compiled = specs.get(&route.upstream.value)?;
    let responses = compiled.config.responses.as_ref()?;
    let mode = match responses.mode {
        OpenApiModeConfig::Enforce => OpenApiMode::Enforce,
        OpenApiModeConfig::Monitor => OpenApiMode::Monitor,
        OpenApiModeConfig::Off => return None,
    };
    if route.openapi.mode == Some(OpenApiModeConfig::Off) {
        return None;
    }
    Some(Arc::new(ResponseValidation {
        spec: compiled.spec.clone(),
        mode,
        undeclared_fields: responses.undeclared_fields,
        max_body_bytes: responses.max_body_bytes,
    }))
}

#[cfg(test)]
mod tests {
    /// The policy crate validates (and authorises) the path the router forwards: the two
    /// normalisations must agree.
    #[test]
    fn path_normalisation_agrees_with_the_router() {
        for path in [
            "/",
            "/a/b",
            "/a/../b",
            "/a/%2e%2E/b",
            "/a/.%2e/b",
            "//a//b/",
            "/a\\b\\..\\c",
            "/..",
            "/../..",
            "/a/.",
            "/a/./",
            "/%2e",
            "/a/%2e%2e%2f/b",
            "/.well-known/x",
            "/a/..%2f",
            "/users/7/",
            "/a//../b",
        ] {
            assert_eq!(
                apiguard_policy::openapi::normalize_path(path),
                crate::router::normalize_path(path),
                "{path}"
            );
        }
    }
}
