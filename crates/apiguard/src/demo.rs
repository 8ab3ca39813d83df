//! `apiguard demo`: the sample API (REST, GraphQL, gRPC) with the gateway in front of it, in
//! one process, and what to try.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;

pub struct DemoOptions {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// Where the second gateway (another organisation sharing through the hub) listens.
    pub partner: SocketAddr,
}

/// How the demo gateway reaches the hub.
struct HubAccess<'a> {
    url: String,
    key: &'a str,
    outbox: PathBuf,
}

/// The second organisation's gateway: the same sample API behind it, sharing through the hub.
fn partner_config(listen: SocketAddr, http_api: SocketAddr, hub: &HubAccess<'_>) -> String {
    format!(
        r#"# Written by `apiguard demo`: a partner organisation's gateway.
listeners:
  - name: partner
    address: "{listen}"
upstreams:
  sample-http:
    targets: ["{http_api}"]
routes:
  - id: api
    upstream: sample-http
hub:
  url: {url}
  api_key: {key}
  outbox: {outbox}
access_log:
  enabled: false
reload:
  watch: false
"#,
        url = hub.url,
        key = hub.key,
        outbox = hub.outbox.display(),
    )
}

/// The gateway configuration the demo runs, pointing at the sample API's ports.
fn demo_config(
    options: &DemoOptions,
    http_api: SocketAddr,
    grpc_api: SocketAddr,
    hub: &HubAccess<'_>,
) -> String {
    format!(
        r#"# Written by `apiguard demo`.
listeners:
  - name: demo
    address: "{listen}"
admin:
  address: "{admin}"
hub:
  url: {hub_url}
  api_key: {hub_key}
  outbox: {outbox}
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
        hub_url = hub.url,
        hub_key = hub.key,
        outbox = hub.outbox.display(),
    )
}

/// An embedded hub (in-process bus, SQLite in `dir`) with two participants; their keys.
/// The demo has one reporting organisation, so its hub publishes an indicator reported by
/// one organisation (`trust.k: 1`, set explicitly; the default is 3, see docs/hub.md).
async fn start_hub(dir: &std::path::Path) -> Result<(apiguard_hub::Hub, String, String), String> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| e.to_string())?;
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let yaml = format!(
        "listen: 127.0.0.1:0\nsecret: {secret}\nstore: sqlite://{}\nreports:\n  default_ttl: 2m\ntrust:\n  k: 1\n",
        dir.join("hub.db").display()
    );
    let settings = apiguard_hub::HubConfig::parse(&yaml)
        .and_then(|c| c.settings())
        .map_err(|e| format!("hub: {e}"))?;
    let hub = apiguard_hub::Hub::start(settings)
        .await
        .map_err(|e| format!("hub: {e}"))?;
    let mut keys = Vec::new();
    for (name, organisation) in [("demo", "Demo Shop"), ("partner", "Partner Bank")] {
        let subscription: apiguard_hub::Subscription =
            serde_json::from_str("{}").map_err(|e| e.to_string())?;
        let (_, key) = hub
            .register(apiguard_hub::NewParticipant {
                name: name.into(),
                organisation: organisation.into(),
                own_networks: Vec::new(),
                own_hosts: Vec::new(),
                subscription,
            })
            .await
            .map_err(|e| format!("hub: {e}"))?;
        keys.push(key);
    }
    let partner = keys.pop().unwrap_or_default();
    let demo = keys.pop().unwrap_or_default();
    Ok((hub, demo, partner))
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
    let (hub, demo_key, partner_key) = start_hub(&dir).await?;
    let hub_url = format!("http://{}", hub.local_addr());
    let config = dir.join("gateway.yaml");
    let access = HubAccess {
        url: hub_url.clone(),
        key: &demo_key,
        outbox: dir.join("outbox"),
    };
    std::fs::write(&config, demo_config(&options, http_api, grpc_api, &access))
        .map_err(|e| format!("{}: {e}", config.display()))?;
    let partner_file = dir.join("partner.yaml");
    let partner_access = HubAccess {
        url: hub_url.clone(),
        key: &partner_key,
        outbox: dir.join("partner-outbox"),
    };
    std::fs::write(
        &partner_file,
        partner_config(options.partner, http_api, &partner_access),
    )
    .map_err(|e| format!("{}: {e}", partner_file.display()))?;

    let gateway = apiguard_gateway::Gateway::start(&config)
        .await
        .map_err(|e| e.to_string())?;
    let partner = apiguard_gateway::Gateway::start(&partner_file)
        .await
        .map_err(|e| format!("partner gateway: {e}"))?;
    let gw = gateway.listen_addrs()[0];
    let partner_gw = partner.listen_addrs()[0];
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

The network effect: a hub ({hub_url}) links this gateway with a partner organisation's
gateway on http://{partner_gw} (same sample API behind it).
  curl -i http://{partner_gw}/api/users/1                          # 200: you are a stranger there
  curl -i "http://{gw}/api/users?id=1%27%20OR%201=1--"              # an SQL injection: 403 here, reported to the hub
  curl -i http://{partner_gw}/api/users/1                          # 403 now: the partner blocks you on the shared indicator
  The shared block lasts 2 minutes (the demo hub's TTL); `curl -s http://{admin}/enforcement/blocks` lists this gateway's rules.
  (This demo hub publishes what one organisation reports; a real hub waits until 3 trusted organisations agree.)

Ctrl-C stops the demo.
"#,
        config = config.display()
    );
    let result = gateway
        .run_until_signalled()
        .await
        .map_err(|e| e.to_string());
    drop(partner);
    hub.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
