//! The `apiguard` command line: wiring only.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;

/// mimalloc instead of the system allocator: a proxy allocates and frees many small buffers
/// per request, and glibc malloc took about 7% of the CPU under load (perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// apiguard: an API security gateway (and, later, a threat-intelligence hub).
///
/// The gateway sits in front of REST, gRPC and GraphQL APIs: it routes, inspects and blocks,
/// balances over upstream pools, and exports metrics on an admin endpoint.
#[derive(Parser)]
#[command(
    name = "apiguard",
    version,
    about,
    long_about,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a configuration file.
    ///
    /// SIGHUP (or a change of the file, unless `reload.watch` is false) reloads it: a bad file
    /// is rejected and logged and the running configuration keeps serving. SIGTERM or SIGINT
    /// stops accepting connections, lets in-flight requests finish (`reload.drain_timeout`)
    /// and exits. Logs are JSON lines on standard output; RUST_LOG sets the level (default
    /// info).
    Run {
        /// The gateway configuration (YAML). See docs/configuration.md.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Worker threads serving traffic, each a single-threaded runtime with its own
        /// upstream connections (default: one per CPU the process may run on).
        #[arg(long, value_name = "N")]
        workers: Option<std::num::NonZeroUsize>,
    },
    /// Check a configuration file without running it.
    ///
    /// Prints every problem as `file:line:column: reason` and exits with status 1 when there
    /// is one, 0 when the file is valid.
    Validate {
        /// The gateway configuration (YAML) to check.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the JSON Schema of the configuration file.
    Schema,
    /// A first run: a sample API (REST, GraphQL, gRPC) with the gateway in front of it.
    ///
    /// Starts, in this one process, the sample API on free loopback ports, the gateway on
    /// `--listen`, and an embedded hub linking it with a partner organisation's gateway on
    /// `--partner`, then prints commands to try. Nothing to install, no configuration to
    /// write.
    Demo {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Where the admin endpoint (metrics, health, config versions) listens.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
        /// Where a second gateway, a partner organisation sharing threats through the
        /// demo's hub, listens.
        #[arg(long, default_value = "127.0.0.1:8081")]
        partner: std::net::SocketAddr,
    },
    /// Run the threat-intelligence hub with a configuration file, or manage its participants.
    ///
    /// Participants report threats over REST; the hub normalises and anonymises them and fans
    /// them out to every participant's feed through RabbitMQ (or, with no `broker` in the
    /// file, an in-process bus). SIGTERM or SIGINT stops it. See docs/hub.md.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Hub {
        /// The hub configuration (YAML). See docs/hub.md.
        #[arg(short, long, value_name = "FILE", required = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: Option<HubAction>,
    },
}

#[derive(Subcommand)]
enum HubAction {
    /// Register a participant in the hub's store and print its API key (shown once).
    ///
    /// Works on the store the configuration names, with no hub running; with a `broker` in
    /// the file it also declares the participant's queue, so a running hub delivers to it
    /// at once. With a certificate (`--cert`, `--cert-sha256` or `--cert-subject`) the
    /// participant authenticates with key and certificate (`--auth both`, the default) or
    /// with the certificate alone (`--auth certificate`, no key is made).
    Register {
        /// The hub configuration (YAML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// A unique short name (letters, digits, `-`, `_`, `.`).
        #[arg(long)]
        name: String,
        /// The organisation's name (never shared).
        #[arg(long)]
        organisation: String,
        /// One of the participant's own networks (never shared as an indicator). Repeatable.
        #[arg(long = "own-network", value_name = "CIDR")]
        own_networks: Vec<String>,
        /// One of the participant's own host names (scrubbed from its reports). Repeatable.
        #[arg(long = "own-host", value_name = "NAME")]
        own_hosts: Vec<String>,
        /// How it authenticates: api_key, certificate or both.
        #[arg(long, value_name = "MODE")]
        auth: Option<String>,
        /// A client certificate (PEM) that identifies it, pinned by its SHA-256. Repeatable.
        #[arg(long = "cert", value_name = "FILE")]
        cert_files: Vec<PathBuf>,
        /// A client certificate's SHA-256 fingerprint (hex, colons allowed). Repeatable.
        #[arg(long = "cert-sha256", value_name = "HEX")]
        cert_sha256: Vec<String>,
        /// A client certificate subject, such as "CN=gw-1, O=Example". Repeatable.
        #[arg(long = "cert-subject", value_name = "SUBJECT")]
        cert_subjects: Vec<String>,
    },
    /// List the participants in the hub's store with their credentials (never keys).
    Participants {
        /// The hub configuration (YAML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Manage one participant.
    Participant {
        #[command(subcommand)]
        action: ParticipantAction,
    },
}

#[derive(Subcommand)]
enum ParticipantAction {
    /// Replace what a participant receives (its subscription) and print the new one.
    ///
    /// The filter is what the options say; a part left out accepts everything (no option at
    /// all: every report). Works on the store the configuration names; with a `broker` in
    /// the file it also rebinds the participant's queue (new bindings before the old ones
    /// go, so nothing both accept is missed), and a running hub delivers by the new filter
    /// from the participant's next feed call.
    Subscription {
        /// The hub configuration (YAML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The participant's name (or id).
        #[arg(long)]
        name: String,
        /// An attack class to receive, such as sqli or credential_stuffing. Repeatable.
        #[arg(long = "class", value_name = "CLASS")]
        classes: Vec<String>,
        /// The lowest severity to receive: low, medium, high or critical.
        #[arg(long, value_name = "SEVERITY")]
        min_severity: Option<String>,
        /// A kind of address indicator to receive: ip, prefix or none. Repeatable.
        #[arg(long = "address-kind", value_name = "KIND")]
        address_kinds: Vec<String>,
    },
}

fn hub_action(action: HubAction) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        match action {
            HubAction::Register {
                config,
                name,
                organisation,
                own_networks,
                own_hosts,
                auth,
                cert_files,
                cert_sha256,
                cert_subjects,
            } => {
                let args = apiguard_hub::cli::RegisterArgs {
                    name,
                    organisation,
                    own_networks,
                    own_hosts,
                    auth,
                    cert_files,
                    cert_sha256,
                    cert_subjects,
                };
                let registered = apiguard_hub::cli::register(&config, &args).await?;
                let p = &registered.participant;
                println!("registered participant `{}` (id {})", p.name, p.id);
                if let Some(warning) = &registered.queue_warning {
                    eprintln!(
                        "apiguard hub register: warning: its queue is not declared yet \
                         ({warning}); the hub declares it when it starts"
                    );
                }
                match &registered.api_key {
                    Some(key) => {
                        println!("API key (shown once; the hub keeps only its SHA-256):");
                        println!("{key}");
                    }
                    None => println!("no API key: it authenticates with its certificate"),
                }
                Ok(())
            }
            HubAction::Participant {
                action:
                    ParticipantAction::Subscription {
                        config,
                        name,
                        classes,
                        min_severity,
                        address_kinds,
                    },
            } => {
                let args = apiguard_hub::cli::SubscriptionArgs {
                    classes,
                    min_severity,
                    address_kinds,
                };
                let changed = apiguard_hub::cli::set_subscription(&config, &name, &args).await?;
                let p = &changed.participant;
                let subscription =
                    serde_json::to_string(&p.subscription).unwrap_or_else(|e| e.to_string());
                println!(
                    "participant `{}` (id {}) now receives {subscription}",
                    p.name, p.id
                );
                if let Some(warning) = &changed.broker_warning {
                    eprintln!(
                        "apiguard hub participant subscription: warning: its queue is not \
                         rebound yet ({warning}); the hub finishes it when it next starts"
                    );
                }
                Ok(())
            }
            HubAction::Participants { config } => {
                let list = apiguard_hub::cli::participants(&config).await?;
                println!("NAME\tID\tAUTH\tAPI KEYS\tCERTIFICATES\tORGANISATION");
                for p in list {
                    let certs: Vec<String> = p
                        .certs
                        .iter()
                        .map(|c| match c {
                            apiguard_hub::credentials::CertMatch::Sha256(v) => {
                                format!("sha256:{v}")
                            }
                            apiguard_hub::credentials::CertMatch::Subject(v) => {
                                format!("subject:{v}")
                            }
                        })
                        .collect();
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        p.participant.name,
                        p.participant.id,
                        p.mode.as_str(),
                        p.keys,
                        if certs.is_empty() {
                            "-".to_owned()
                        } else {
                            certs.join(" ")
                        },
                        p.participant.organisation
                    );
                }
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let error: apiguard_hub::HubError = error;
            eprintln!("apiguard hub: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .init();
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| eprintln!("apiguard: cannot start the async runtime: {error}"))
        .ok()
}

/// One single-threaded runtime per core serves traffic; the main thread's runtime handles
/// signals, reloads and the admin endpoint.
fn run_gateway(
    config: &std::path::Path,
    workers: Option<std::num::NonZeroUsize>,
) -> Result<(), String> {
    // The worker count is fixed at start: read it before the threads exist. A file that
    // does not parse fails again, with every problem listed, in `Gateway::start_on`.
    let configured = apiguard_gateway::load::read_config(config)
        .ok()
        .and_then(|(c, _)| c.workers)
        .and_then(std::num::NonZeroUsize::new);
    let cores = workers
        .or(configured)
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, |n| n.get());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut handles = Vec::new();
    let mut threads = Vec::new();
    for index in 0..cores {
        let (sender, receiver) = std::sync::mpsc::channel();
        let mut stopped = stopped.clone();
        let thread = std::thread::Builder::new()
            .name(format!("apiguard-worker-{index}"))
            .spawn(move || {
                apiguard_gateway::worker::set_current(index);
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = sender.send(Err(error.to_string()));
                        return;
                    }
                };
                let _ = sender.send(Ok(runtime.handle().clone()));
                runtime.block_on(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                });
            })
            .map_err(|e| format!("apiguard: cannot start a worker thread: {e}"))?;
        let handle = receiver
            .recv()
            .map_err(|_| "apiguard: a worker thread died at start".to_owned())?
            .map_err(|e| format!("apiguard: cannot start a worker runtime: {e}"))?;
        handles.push(handle);
        threads.push(thread);
    }
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("apiguard: cannot start the async runtime: {e}"))?;
    let result = control.block_on(async {
        let gateway = apiguard_gateway::Gateway::start_on(config, &handles)
            .await
            .map_err(|e| e.to_string())?;
        gateway
            .run_until_signalled()
            .await
            .map_err(|e| format!("apiguard: signal handling failed: {e}"))
    });
    let _ = stop.send(true);
    for thread in threads {
        let _ = thread.join();
    }
    result
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => match apiguard_gateway::validate_file(&config) {
            Ok(()) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        },
        Command::Schema => {
            let schema = schemars::schema_for!(apiguard_gateway::config::Config);
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).expect("a schema serialises")
            );
            ExitCode::SUCCESS
        }
        Command::Demo {
            listen,
            admin,
            partner,
        } => {
            init_logging();
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            runtime.block_on(async {
                match demo::run(demo::DemoOptions {
                    listen,
                    admin,
                    partner,
                })
                .await
                {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => {
                        eprintln!("apiguard demo: {error}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Hub {
            action: Some(action),
            ..
        } => hub_action(action),
        Command::Hub {
            config: None,
            action: None,
        } => {
            eprintln!("apiguard hub: --config FILE is required");
            ExitCode::FAILURE
        }
        Command::Hub {
            config: Some(config),
            action: None,
        } => {
            init_logging();
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(apiguard_hub::run(&config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("apiguard hub: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config, workers } => {
            init_logging();
            match run_gateway(&config, workers) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
