//! `apiguard demo`: the sample API (REST, GraphQL, gRPC) with the gateway in front of it, in
//! one process, and what to try.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;

pub struct DemoOptions {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

/// The gateway configuration the demo runs, pointing at the sample API's ports.
fn demo_config(options: &DemoOptions, http_api: SocketAddr, grpc_api: SocketAddr) -> String {
    format!(
        r#"# Written by `apiguard demo`.
listeners:
  - name: demo
    address: "{listen}"
admin:
  address: "{admin}"
upstreams:
  sample-http:
    targets: ["{http_api}"]
    health_check: {{path: /healthz, interval: 2s}}
  sample-grpc:
    targets: ["{grpc_api}"]
    protocol: h2c
routes:
  - id: grpc
    match:
      path: {{prefix: /apiguard.sample.v1.Orders}}
    upstream: sample-grpc
  - id: graphql
    match:
      path: {{exact: /graphql}}
    upstream: sample-http
  - id: user-by-id
    match:
      path: {{template: "/api/users/{{id}}"}}
    upstream: sample-http
  - id: api
    match:
      path: {{prefix: /api}}
    upstream: sample-http
    limits:
      max_body_bytes: 65536
access_log:
  enabled: true
reload:
  watch: false
"#,
        listen = options.listen,
        admin = options.admin,
    )
}

pub async fn run(options: DemoOptions) -> Result<(), String> {
    let http_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("sample API: {e}"))?;
    let grpc_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("sample gRPC API: {e}"))?;
    let http_api = http_listener.local_addr().map_err(|e| e.to_string())?;
    let grpc_api = grpc_listener.local_addr().map_err(|e| e.to_string())?;
    // One store behind both surfaces: an order created over gRPC shows up over REST.
    let store = apiguard_sampleapi::Store::seeded();
    tokio::spawn(apiguard_sampleapi::serve_http_with_store(
        store.clone(),
        http_listener,
        std::future::pending(),
    ));
    tokio::spawn(apiguard_sampleapi::serve_grpc_with_store(
        store,
        grpc_listener,
        std::future::pending(),
    ));

    let dir: PathBuf = std::env::temp_dir().join(format!("apiguard-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let config = dir.join("gateway.yaml");
    std::fs::write(&config, demo_config(&options, http_api, grpc_api))
        .map_err(|e| format!("{}: {e}", config.display()))?;

    let gateway = apiguard_gateway::Gateway::start(&config)
        .await
        .map_err(|e| e.to_string())?;
    let gw = gateway.listen_addrs()[0];
    let admin = gateway.admin_addr().unwrap_or(options.admin);
    eprintln!(
        r#"
apiguard demo: the gateway on http://{gw} guards a sample API (REST and GraphQL on {http_api}, gRPC on {grpc_api}).
The gateway's configuration is {config}; its JSON access logs follow on standard output.

Try:
  curl -i http://{gw}/api/users/1                                  # routed by template, X-Request-Id added
  curl -s http://{gw}/api/orders                                   # the REST resource
  curl -s -X POST http://{gw}/api/users -H 'content-type: application/json' -d '{{"name":"Dana","email":"dana@example.com"}}'
  curl -s http://{gw}/graphql -H 'content-type: application/json' -d '{{"query":"{{ users {{ id name }} }}"}}'
  curl -i http://{gw}/nowhere                                      # no route: problem+json 404
  head -c 100000 /dev/zero | curl -i -X POST http://{gw}/api/orders --data-binary @-   # over the route's body limit: 413
  curl -s http://{admin}/metrics | grep apiguard_requests_total      # Prometheus metrics
  curl -s http://{admin}/config/versions                             # applied configuration versions
  grpcurl -plaintext -import-path proto -proto sample.proto -d '{{"id":1}}' {gw} apiguard.sample.v1.Orders/GetOrder

Ctrl-C stops the demo.
"#,
        config = config.display()
    );
    let result = gateway
        .run_until_signalled()
        .await
        .map_err(|e| e.to_string());
    let _ = std::fs::remove_dir_all(&dir);
    result
}
