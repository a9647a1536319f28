//! `sitrep serve` and `sitrep key`: the aggregator's process and the keys its principals file grants. `serve`
//! applies the command line over the configuration, checks where and how it may listen before anything starts,
//! opens the store (`sitrep_server::open_store`, which also checks a Redis store's data), and hands the rest to
//! `sitrep_server` until the shutdown signal; with `--demo` it also runs simulated providers against itself and
//! prints every change, so there is something to see at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use sitrep_client::sim::{SimOptions, SimStats, SimulatedProvider};
use sitrep_core::Timestamp;
use sitrep_proto::v1 as pb;
use sitrep_server::config::RedisUrl;
use sitrep_server::{App, Config};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::watch::follow;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    sitrep serve --demo                       # in-memory store, simulated providers, changes printed\n  \
    sitrep serve --redis redis://127.0.0.1:6379/   # state in Redis, shared by every replica\n  \
    sitrep serve --config sitrep.toml --listen 0.0.0.0:50051   # all interfaces: needs [tls] (or allow_plaintext)\n  \
    sitrep serve --config /etc/sitrep/sitrep.toml\n\n\
    Logging is controlled by RUST_LOG (default: info), e.g. RUST_LOG=sitrep_server=debug;\n\
    SITREP_LOG_FORMAT=json writes one JSON object per line.")]
pub struct ServeArgs {
    /// Configuration file (TOML). Without one, built-in defaults are used (see docs/ARCHITECTURE.md).
    #[arg(long, short, env = "SITREP_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on; overrides the configuration. Port 0 picks a free port.
    #[arg(long, env = "SITREP_LISTEN")]
    listen: Option<SocketAddr>,
    /// Keep state in this Redis (redis://host:port/db) instead of the embedded in-memory store.
    #[arg(long, env = "SITREP_REDIS", value_name = "URL")]
    redis: Option<String>,
    /// Also run simulated providers and print every change, so there is something to see at once.
    #[arg(long)]
    demo: bool,
    /// With --demo: real seconds per simulated hour.
    #[arg(long, default_value_t = 2.0, requires = "demo")]
    demo_seconds_per_hour: f64,
}

#[derive(Args)]
#[command(after_help = "The key is printed once, on standard output; the principals file keeps only its SHA-256, \
    so a lost key is replaced, never recovered. Add the printed [[principal.key]] to an existing principal's \
    table, or the whole [[principal]] for a new one; the aggregator reads the file again within seconds (no \
    restart), and a key is revoked by deleting its lines.\n\n\
    Examples:\n  \
    sitrep key --name \"RJ7 feed\" --write RJ7 --read provider:RJ7\n  \
    sitrep key --name \"London control room\" --read region:Y56\n  \
    sitrep key --name \"operations\" --read '*' --admin")]
pub struct KeyArgs {
    /// The principal's name, as the audit shows it.
    #[arg(long)]
    name: String,
    /// Providers it may report for (and their sites); '*' for every provider.
    #[arg(long, value_name = "PROVIDER")]
    write: Vec<String>,
    /// Scopes it may read: provider:CODE, system:CODE, region:CODE, nation, or '*'.
    #[arg(long, value_name = "SCOPE")]
    read: Vec<String>,
    /// It may use the operational endpoints.
    #[arg(long)]
    admin: bool,
    /// Scopes whose providers it may act for in mutual aid, as a coordinator: system:CODE, region:CODE, nation, '*'.
    #[arg(long, value_name = "SCOPE")]
    coordinate: Vec<String>,
    /// The key's id, named in the audit (default: the principal's name and today's date).
    #[arg(long)]
    id: Option<String>,
}

pub async fn serve(args: ServeArgs, cancel: CancellationToken) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(url) = args.redis {
        config.store.redis = Some(RedisUrl::new(url));
    }
    // Before anything else starts: where and how this aggregator may listen, and its certificate.
    let warn_plaintext = sitrep_server::tls::check_listener(config.listen, &config.tls)?;
    let tls = sitrep_server::tls::ServerTls::from_config(&config.tls)?;
    if args.demo && tls.is_some() {
        bail!("--demo serves plaintext on a loopback address; run it without [tls] cert and key");
    }
    let rules = config.load_rules()?;
    if rules.opel.as_ref().is_some_and(|f| f.example) {
        tracing::warn!(
            "computing OPEL levels with the shipped EXAMPLE framework; set [opel] framework to the current national one"
        );
    }
    let store = sitrep_server::open_store(&config, &rules).await?;
    let store_name = store.name();
    if config.listen.ip().is_unspecified() && config.http.allowed_hosts.is_empty() {
        tracing::warn!(listen = %config.listen, "[http] allowed_hosts is empty: HTTP requests naming any Host are answered");
    }
    let auth = sitrep_server::auth::Authenticator::from_config(&config, &rules)?;
    if auth.is_open() {
        tracing::warn!(listen = %config.listen, "no principals file ([auth] principals): every caller may write and read everything");
    }
    let transport = match &tls {
        Some(tls) => tls.describe(),
        None => "plaintext, no TLS".to_owned(),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let app = App::new(&config, store, rules, auth, cancel.clone()).with_tls(tls);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (set --listen or `listen` in the config)", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, store = store_name, "sitrep aggregator serving gRPC and HTTP at {scheme}://{addr}/ ({transport})");
    if warn_plaintext {
        tracing::warn!(
            %addr,
            "serving plaintext (no TLS) on a non-loopback address because [tls] allow_plaintext = true: reports and \
             pictures cross the network unencrypted unless a TLS-terminating proxy is in front"
        );
    }
    // A plain line on stdout, for people and for scripts (and tests) that start sitrep on port 0.
    println!("sitrep listening on {addr}");
    if args.demo {
        let providers =
            app.directory().providers().map(|p| SimulatedProvider { code: p.code.clone(), kind: p.kind }).collect();
        tokio::spawn(demo(addr, providers, args.demo_seconds_per_hour, cancel.clone()));
    }
    sitrep_server::serve(app, listener, cancel).await?;
    Ok(ExitCode::SUCCESS)
}

/// The demo: simulated providers feeding the aggregator, and a subscriber printing what changes.
async fn demo(addr: SocketAddr, providers: Vec<SimulatedProvider>, seconds_per_hour: f64, cancel: CancellationToken) {
    let url = format!("http://{addr}");
    let channel = match Endpoint::from_shared(url.clone()).map(|e| e.connect_lazy()) {
        // The demo's own aggregator is open (loopback, no principals): no credential.
        Ok(c) => sitrep_client::credentials::authed(c, Default::default()),
        Err(e) => return tracing::error!(error = %e, "demo cannot connect to its own aggregator"),
    };
    let options = SimOptions { seconds_per_hour, source: "sitrep demo".into(), ..Default::default() };
    let sim =
        sitrep_client::sim::run(channel.clone(), &providers, options, Arc::new(SimStats::default()), cancel.clone());
    let request = pb::SubscribeRequest { heartbeat_seconds: 15, ..Default::default() };
    let printer = follow(channel, url, request, true, cancel.clone());
    let _ = tokio::join!(sim, printer);
}

/// Prints a new API key, then the principals file lines that grant it.
pub fn key(args: KeyArgs) -> ExitCode {
    let (key, sha256) = sitrep_server::auth::new_key();
    let today = &Timestamp::now().to_string()[..10];
    let slug: String =
        args.name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let id = args.id.unwrap_or_else(|| format!("{slug}-{today}"));
    let list = |items: &[String]| items.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", ");
    println!("{key}");
    eprintln!("The key above is shown once; give it to its holder (e.g. as SITREP_KEY). Add to the principals file:\n");
    eprintln!("[[principal]]");
    eprintln!("name = {:?}", args.name);
    eprintln!("write = [{}]", list(&args.write));
    eprintln!("read = [{}]", list(&args.read));
    eprintln!("admin = {}", args.admin);
    if !args.coordinate.is_empty() {
        eprintln!("coordinate = [{}]", list(&args.coordinate));
    }
    eprintln!("[[principal.key]]");
    eprintln!("id = {id:?}");
    eprintln!("sha256 = {sha256:?}");
    ExitCode::SUCCESS
}
