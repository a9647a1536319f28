//! `sitrep`: the command-line entry point. Thin by design: it parses arguments, sets up logging, and calls into
//! `sitrep-server` (serve), `sitrep-client` (simulate, and renderings for watch and aid), `sitrep-feed` (feed) or
//! the generated gRPC clients (push, watch, aid).

mod aid;
mod bench;
mod feed;
mod server;
mod tls;

// Measured: with the system allocator, allocation and freeing took about 40% of the aggregator's CPU under load
// (`docs/PERFORMANCE.md`); mimalloc's thread-local free lists cost a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use sitrep_client::display::{update_line, value_text};
use sitrep_client::sim::{SimOptions, SimStats};
use sitrep_core::Timestamp;
use sitrep_core::backoff::Backoff;
use sitrep_core::directory::ProviderKind;
use sitrep_core::input::{self, Format, Mapping};
use sitrep_proto::v1 as pb;
use sitrep_proto::v1::provider_service_client::ProviderServiceClient;
use sitrep_proto::v1::query_service_client::QueryServiceClient;
use sitrep_proto::v1::subscriber_service_client::SubscriberServiceClient;
use sitrep_server::config::RedisUrl;
use sitrep_server::{App, Config};
use sitrep_telemetry::{self as telemetry, Role, Telemetry};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tonic_types::StatusExt;

#[derive(Parser)]
#[command(name = "sitrep", version, about = "A live, shared picture of health and care capacity and pressure.")]
#[command(long_about = "A live, shared picture of health and care capacity and pressure.\n\n\
Providers stream status reports over gRPC; the aggregator validates them, keeps live state and hourly history, \
and streams every change to subscribers (wallboards, other systems, terminals).")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the aggregator.
    #[command(after_help = "Examples:\n  \
        sitrep serve --demo                       # in-memory store, simulated providers, changes printed\n  \
        sitrep serve --redis redis://127.0.0.1:6379/   # state in Redis, shared by every replica\n  \
        sitrep serve --config sitrep.toml --listen 0.0.0.0:50051   # all interfaces: needs [tls] (or allow_plaintext)\n  \
        sitrep serve --config /etc/sitrep/sitrep.toml\n\n\
        Logging is controlled by RUST_LOG (default: info), e.g. RUST_LOG=sitrep_server=debug;\n\
        SITREP_LOG_FORMAT=json writes one JSON object per line.")]
    Serve(ServeArgs),
    /// Send one report from a JSON file and print the acknowledgement.
    #[command(after_help = "The file holds one report, e.g.\n  \
        {\"provider\": \"RJ7\", \"period\": \"2026-11-27T14:00:00Z\",\n   \
        \"values\": {\"beds.cc_adult.open\": 28, \"beds.cc_adult.occupied\": 25,\n              \
        \"ed.over_12h\": {\"absent\": \"not_available\"}},\n   \
        \"opel_level\": 3, \"narrative\": \"Two wards closed\"}\n\
        period defaults to the current hour, observed_at to now; without a revision (in the file or --revision) \
        the aggregator gives the report the next revision of its period.\n\n\
        Examples:\n  \
        sitrep push report.json\n  \
        sitrep push - --server http://sitrep.example:50051 < report.json\n  \
        sitrep push --saner --provider RJ7 MeasureReport.json     # a FHIR SANER MeasureReport or Bundle\n\n\
        Exit status: 0 accepted or duplicate, 2 rejected (each violation is printed), 3 conflict (the same \
        revision was stored before with other content: send it as the revision printed), 1 any other failure.")]
    Push(PushArgs),
    /// Run a trust's feed agent: read exported files (CSV, JSON, FHIR) from a drop folder or the command line,
    /// keep them in an on-disk spool, and stream them to the aggregator until each is acknowledged.
    #[command(after_help = "Examples:\n  \
        sitrep feed --watch /data/exports --mapping trust.toml --server http://sitrep:50051\n  \
        sitrep feed beds.csv --mapping trust.toml        # one file; exits when it is acknowledged\n  \
        sitrep feed --status                             # the spool's depth and the last acknowledgement\n\n\
        Nothing is lost: reports are fsync'd to the spool (--spool, default ./sitrep-spool) before a file leaves \
        the folder, and removed only when acknowledged; after a restart they are sent again, in order, with the \
        same revisions (so the aggregator sees duplicates, not new reports). Unreadable files and rejected reports \
        go to <folder>/rejected/ with a .reason.txt. See docs/FEEDS.md.")]
    Feed(feed::FeedArgs),
    /// Subscribe to changes and print each as a line.
    #[command(after_help = "Examples:\n  \
        sitrep watch                                   # everything\n  \
        sitrep watch --system QWE --metric beds.cc_adult.occupied\n  \
        sitrep watch --provider RJ7 --provider RGT --resume m1abc:42-0\n\n\
        The watch reconnects by itself and resumes from the last cursor it saw.")]
    Watch(WatchArgs),
    /// Stream synthetic reports from the directory's providers to an aggregator.
    #[command(after_help = "Examples:\n  \
        sitrep simulate                                # every provider, one simulated hour per 2 s\n  \
        sitrep simulate --providers 5 --seconds-per-hour 0.5 --backfill-hours 48\n\n\
        Simulated time starts --backfill-hours in the past and never runs ahead of real time; once caught up, each \
        tick sends a new revision of the current hour.")]
    Simulate(SimulateArgs),
    /// Print the hour-by-hour history of a provider, or of a metric across providers.
    #[command(after_help = "Examples:\n  \
        sitrep history --provider RJ7                          # every revision of the last 24 hours\n  \
        sitrep history --provider RJ7 --metric beds.cc_adult.occupied --hours 72\n  \
        sitrep history --metric beds.cc_adult.occupied --system QWE   # one metric, each provider of a system\n  \
        sitrep history --provider RGT --from 2026-11-26T00:00:00Z --to 2026-11-26T23:00:00Z")]
    History(HistoryArgs),
    /// Print one metric hour by hour for a provider, a system, a region or the nation: value, change since the
    /// previous hour, corrections, and which providers reported (completeness).
    #[command(after_help = "Examples:\n  \
        sitrep hourly --provider RJ7 --metric beds.cc_adult.occupancy       # the last 72 hours\n  \
        sitrep hourly --scope system:QWE --metric beds.ga_adult.occupancy --hours 24\n  \
        sitrep hourly --scope nation:ENG --metric ed.over_12h")]
    Hourly(HourlyArgs),
    /// Print the open alerts (threshold, escalation, stale, jump, OPEL mismatch).
    #[command(after_help = "Examples:\n  \
        sitrep alerts\n  \
        sitrep alerts --system QWE --provider RGT")]
    Alerts(AlertsArgs),
    /// Benchmark the hot path against a real Redis, with a baseline of the bare Redis work.
    #[command(
        after_help = "Starts its own redis-server (unless --redis) and its own aggregator process, drives P provider \
        streams with S subscribers attached, and prints throughput, latencies, the aggregator's CPU per report and \
        peak memory; then the same streams against a server that only makes the raw writes (the gRPC floor), and the same \
        Redis work done without gRPC or the aggregator.\n\n\
        Examples:\n  \
        sitrep bench\n  \
        sitrep bench --providers 200 --subscribers 50 --seconds 30"
    )]
    Bench(bench::BenchArgs),
    /// Print the attempts the aggregator refused (unauthenticated, outside a grant, over a limit): the audit of
    /// who has been knocking. Needs a key with the admin grant.
    #[command(after_help = "Examples:\n  \
        sitrep refusals --key-file admin.key\n  \
        sitrep refusals --hours 1 --limit 50")]
    Refusals(RefusalsArgs),
    /// Mutual aid: ask for capacity, offer it, accept, decline, withdraw, move a request on, and see requests,
    /// candidates and measures.
    #[command(after_help = "Examples:\n  \
        sitrep aid request --provider RJ7 --pair beds.cc_adult --quantity 2 --needed-by 2h --reference REF1\n  \
        sitrep aid candidates R1\n  \
        sitrep aid offer R1 --provider RXH --quantity 1 --hold 2h\n  \
        sitrep aid accept O1\n  \
        sitrep aid progress R1 in-transit\n  \
        sitrep aid list --scope system:QWE\n  \
        sitrep aid measures --scope system:QWE\n\n\
        Every decision is recorded with who made it and the picture cursor it was made on (--cursor, default the \
        aggregator's current one). Never put patient-identifiable data in a reference, summary or reason.")]
    Aid(aid::AidArgs),
    /// Make an API key for a principal and print the lines to add to the principals file.
    #[command(after_help = "The key is printed once, on standard output; the principals file keeps only its SHA-256, \
        so a lost key is replaced, never recovered. Add the printed [[principal.key]] to an existing principal's \
        table, or the whole [[principal]] for a new one; the aggregator reads the file again within seconds (no \
        restart), and a key is revoked by deleting its lines.\n\n\
        Examples:\n  \
        sitrep key --name \"RJ7 feed\" --write RJ7 --read provider:RJ7\n  \
        sitrep key --name \"London control room\" --read region:Y56\n  \
        sitrep key --name \"operations\" --read '*' --admin")]
    Key(KeyArgs),
    /// `sitrep bench`'s gRPC floor: a server that only decodes reports, writes them raw to Redis and acknowledges.
    #[command(hide = true)]
    BenchFloor {
        #[arg(long)]
        redis: String,
    },
}

#[derive(Args)]
struct RefusalsArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Only those of the last N hours (the aggregator keeps a day).
    #[arg(long, default_value_t = 24)]
    hours: i64,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 200)]
    limit: u32,
}

#[derive(Args)]
struct KeyArgs {
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

#[derive(Args)]
struct ServeArgs {
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
struct ServerArg {
    /// The aggregator's address: https://host:port (TLS), http://host:port or host:port (plaintext).
    #[arg(long, short, env = "SITREP_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    #[command(flatten)]
    tls: tls::TlsArgs,
}

#[derive(Args)]
struct PushArgs {
    /// The report file, or - for standard input.
    file: PathBuf,
    #[command(flatten)]
    server: ServerArg,
    /// The file's format: json (sitrep's own), csv, or fhir (a SANER MeasureReport or a Bundle of them).
    /// Default: from the file's name and content.
    #[arg(long, value_parser = ["json", "csv", "fhir"])]
    format: Option<String>,
    /// Same as --format fhir.
    #[arg(long)]
    saner: bool,
    /// A mapping file (TOML) from the trust's own column names, codes and absent markers to sitrep's; see
    /// docs/FEEDS.md.
    #[arg(long)]
    mapping: Option<PathBuf>,
    /// The provider the reports are for, when the file does not say (a SANER subject, a CSV without a provider
    /// column).
    #[arg(long)]
    provider: Option<String>,
    /// The revision to send when the file gives none. Without it the aggregator gives the report the next revision
    /// of its period (and the acknowledgement says which); give one to make a retry safe to repeat.
    #[arg(long)]
    revision: Option<u32>,
}

/// Which providers a command is about: the union of those listed and those of the systems and regions listed;
/// every provider when none is given.
#[derive(Args)]
struct ProvidersArg {
    /// This provider (repeatable).
    #[arg(long = "provider", value_name = "CODE")]
    providers: Vec<String>,
    /// Every provider of this system (repeatable).
    #[arg(long = "system", value_name = "CODE")]
    systems: Vec<String>,
    /// Every provider of this region (repeatable).
    #[arg(long = "region", value_name = "CODE")]
    regions: Vec<String>,
}

impl ProvidersArg {
    fn filter(self, metrics: Vec<String>) -> pb::Filter {
        pb::Filter { providers: self.providers, systems: self.systems, regions: self.regions, metrics }
    }
}

#[derive(Args)]
struct WatchArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    who: ProvidersArg,
    /// Show only this metric (repeatable).
    #[arg(long = "metric", value_name = "CODE")]
    metrics: Vec<String>,
    /// Resume after this cursor instead of starting with a snapshot.
    #[arg(long)]
    resume: Option<String>,
    /// Seconds between heartbeats (1..=300).
    #[arg(long, default_value_t = 15)]
    heartbeat: u32,
    /// Do not print heartbeats.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct HistoryArgs {
    #[command(flatten)]
    server: ServerArg,
    /// The provider whose every stored revision to print. Without it, --metric is required and the metric's
    /// history is printed for each provider selected by --system/--region (all when neither is given).
    #[arg(long)]
    provider: Option<String>,
    /// Metric to include (repeatable; with --provider, empty means all).
    #[arg(long = "metric", value_name = "CODE")]
    metrics: Vec<String>,
    /// With a metric's history: providers of this system (repeatable).
    #[arg(long = "system", value_name = "CODE")]
    systems: Vec<String>,
    /// With a metric's history: providers of this region (repeatable).
    #[arg(long = "region", value_name = "CODE")]
    regions: Vec<String>,
    /// Hours back from the current hour (ignored when --from is given).
    #[arg(long, default_value_t = 24)]
    hours: i64,
    /// First period, RFC 3339 (e.g. 2026-11-26T00:00:00Z).
    #[arg(long)]
    from: Option<String>,
    /// Last period, RFC 3339; default the current hour.
    #[arg(long)]
    to: Option<String>,
}

#[derive(Args)]
struct HourlyArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Metric code, reported (e.g. beds.cc_adult.occupied) or derived (e.g. beds.cc_adult.occupancy).
    #[arg(long)]
    metric: String,
    /// A provider's hours (give this or --scope).
    #[arg(long)]
    provider: Option<String>,
    /// A scope's hours: system:CODE, region:CODE or nation:CODE.
    #[arg(long)]
    scope: Option<String>,
    /// Hours up to and including the current one.
    #[arg(long, default_value_t = 72)]
    hours: u32,
}

#[derive(Args)]
struct AlertsArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    who: ProvidersArg,
}

#[derive(Args)]
struct SimulateArgs {
    #[command(flatten)]
    server: ServerArg,
    /// How many providers to simulate, from the aggregator's directory in code order (0: all).
    #[arg(long, default_value_t = 0)]
    providers: usize,
    /// Real seconds per simulated hour.
    #[arg(long, default_value_t = 2.0)]
    seconds_per_hour: f64,
    /// Hours of history to fill in before reaching real time.
    #[arg(long, default_value_t = 24)]
    backfill_hours: i64,
    /// Seed of the synthetic values.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Lets a closed pipe end the process quietly, as it does for other command-line tools (`sitrep history | head`),
/// rather than with a panic message from the next `println!`.
///
/// SIGPIPE stays ignored, as Rust sets it: restoring its default action (as this did before TLS) let a write to a
/// *socket* whose peer had gone kill the process, since vectored writes (`writev`, which TLS records are always
/// written with, and HTTP/2 frames often) cannot ask the kernel not to signal. That killed `sitrep push` when a
/// plaintext server closed on its TLS handshake, and could have killed the aggregator when a client vanished
/// mid-write. Writes to sockets now fail with an error the network code handles; a failed print to standard
/// output (its reader has gone) ends the process with 141, the status a shell reports for SIGPIPE.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info)
    }));
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    // One TLS provider for the process, ring (see the workspace's Cargo.toml): the Redis client's TLS asks rustls
    // for the process's default. Installing fails only if one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let role = match cli.command {
        Command::Serve(_) => Role::Aggregator,
        Command::Feed(_) => Role::Feed,
        _ => Role::Client,
    };
    // Inside the runtime: the trace exporter's channel is made there.
    let telemetry = match runtime.block_on(async { init_logging(role) }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: tracing is misconfigured: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Push(args) => push(args).await,
            Command::Feed(args) => feed::run(args, shutdown_on_signal()).await,
            Command::Watch(args) => watch(args).await,
            Command::Simulate(args) => simulate(args).await,
            Command::History(args) => history(args).await,
            Command::Hourly(args) => hourly(args).await,
            Command::Alerts(args) => alerts(args).await,
            Command::Bench(args) => bench::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::BenchFloor { redis } => bench::floor(&redis).await.map(|()| ExitCode::SUCCESS),
            Command::Key(args) => Ok(key(args)),
            Command::Refusals(args) => refusals(args).await,
            Command::Aid(args) => aid::run(args).await,
        }
    });
    // Before the runtime goes: the last spans are sent over its connections (a short `sitrep feed FILE` run's too).
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to standard error: readable text by default, one JSON object per line with `SITREP_LOG_FORMAT=json`
/// (for log collectors). `RUST_LOG` picks what is logged (default `info`). Traces go to an OTLP collector when the
/// `OTEL_*` variables name one (`sitrep_telemetry`); the returned handle flushes them on exit. An error
/// names the variable at fault.
fn init_logging(role: Role) -> Result<Option<Telemetry>, String> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info".into())
        .add_directive(telemetry::log_directive());
    let (otel, telemetry) = match telemetry::from_env(role)? {
        Some((layer, telemetry)) => (Some(layer), Some(telemetry)),
        None => (None, None),
    };
    // Colours only on a terminal: a log file or collector gets plain text, with nothing but what was logged.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let format = std::env::var("SITREP_LOG_FORMAT");
    let fmt = match format.as_deref() {
        Ok("json") => fmt.json().with_filter(filter).boxed(),
        _ => fmt.with_filter(filter).boxed(),
    };
    tracing_subscriber::registry().with(otel).with(fmt).init();
    if let Ok(other) = format.as_deref()
        && !matches!(other, "json" | "text")
    {
        tracing::warn!(value = other, "SITREP_LOG_FORMAT must be text or json; using text");
    }
    Ok(telemetry)
}

/// A token cancelled on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed before this returns, so a signal
/// that arrives at once is not met by the default action (exit without draining).
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let streams = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
        tokio::spawn(async move {
            match streams {
                (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
                    _ = interrupt.recv() => tracing::info!("interrupt received"),
                    _ = terminate.recv() => tracing::info!("terminate signal received"),
                },
                _ => {
                    tracing::warn!("cannot install signal handlers; falling back to Ctrl-C only");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            t.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("interrupt received");
        t.cancel();
    });
    token
}

/// Prints a new API key, then the principals file lines that grant it.
fn key(args: KeyArgs) -> ExitCode {
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

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
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
    let cancel = shutdown_on_signal();
    let rules = config.load_rules()?;
    if rules.opel.as_ref().is_some_and(|f| f.example) {
        tracing::warn!(
            "computing OPEL levels with the shipped EXAMPLE framework; set [opel] framework to the current national one"
        );
    }
    let store: Arc<dyn sitrep_store::Store> = match sitrep_server::redis_store_from_config(&config, &rules)? {
        Some(redis) => {
            let s = &config.store;
            let at = s.redis.as_ref().map(|u| u.redacted()).unwrap_or_default();
            tracing::info!(redis = %at, sentinels = ?s.redis_sentinels, master = ?s.redis_master, prefix = %s.key_prefix, "using redis");
            // The data's version is checked (and older data upgraded) before serving: data of a newer sitrep is
            // refused here, with its message. A Redis not reachable yet is checked on first contact instead.
            match redis.prepare().await {
                Err(e @ sitrep_store::StoreError::Unavailable { .. }) => {
                    tracing::warn!(error = %e, "redis is not reachable yet; its data version is checked once it is");
                }
                Err(e) => bail!("{e}"),
                Ok(()) => {}
            }
            Arc::new(redis)
        }
        None => sitrep_server::store_from_config(&config, &rules)?,
    };
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
        let providers = app.directory().providers().map(|p| (p.code.clone(), p.kind)).collect();
        tokio::spawn(demo(addr, providers, args.demo_seconds_per_hour, cancel.clone()));
    }
    sitrep_server::serve(app, listener, cancel).await?;
    Ok(ExitCode::SUCCESS)
}

/// The demo: simulated providers feeding the aggregator, and a subscriber printing what changes.
async fn demo(
    addr: SocketAddr,
    providers: Vec<(String, ProviderKind)>,
    seconds_per_hour: f64,
    cancel: CancellationToken,
) {
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

fn connect(server: &ServerArg) -> anyhow::Result<server::Conn> {
    server::connect(&server.server, &server.tls)
}

/// A feed's mapping file (see docs/FEEDS.md), or the empty mapping.
fn load_mapping(path: Option<&std::path::Path>) -> anyhow::Result<Mapping> {
    let Some(path) = path else { return Ok(Mapping::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Mapping::from_toml(&path.display().to_string(), &text)?)
}

async fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    // The address first: a malformed one is refused before anything is read.
    let channel = connect(&args.server)?;
    let bytes = if args.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .context("cannot read the report from standard input")?;
        buf
    } else {
        std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?
    };
    let mut mapping = load_mapping(args.mapping.as_deref())?;
    if args.provider.is_some() {
        mapping.provider = args.provider.clone();
    }
    let name = args.file.display().to_string();
    let format = match (args.saner, args.format.as_deref()) {
        (true, _) => Some(Format::Fhir),
        (false, Some(f)) => Some(Format::parse(f).expect("clap checked it")),
        (false, None) => None,
    };
    // The readers check sizes (the file's, each narrative's) before anything is sent, naming the limit.
    let read = input::read_bytes(&name, &bytes, format, &mapping, Timestamp::now())?;
    for note in &read.notes {
        println!("note: {note}");
    }
    let reports = read.reports.into_iter().map(|mut r| {
        if r.revision == 0 {
            r.revision = args.revision.unwrap_or(0);
        }
        if r.source.is_none() {
            r.source = Some("sitrep push".into());
        }
        r
    });
    let mut client = ProviderServiceClient::new(channel);
    let mut code = ExitCode::SUCCESS;
    for report in reports {
        // A trace per report when tracing is on: the call's metadata carries its context to the aggregator.
        let period = report.period.map(|p| p.to_string()).unwrap_or_default();
        let file = args.file.display().to_string();
        let span = telemetry::send_span(&report.provider, report.site.as_deref(), &period, report.revision, &file);
        let call = client.submit(sitrep_proto::convert::report_to_wire(&report));
        let answer = tokio::time::timeout(server::ANSWER_TIMEOUT, tracing::Instrument::instrument(call, span.clone()))
            .await
            .unwrap_or_else(|_| Err(server::no_answer(server::ANSWER_TIMEOUT)));
        let outcome = match &answer {
            Ok(ack) => ack.get_ref().outcome().as_str_name().trim_start_matches("OUTCOME_").to_lowercase(),
            Err(status) if status.code() == tonic::Code::InvalidArgument => "rejected".into(),
            Err(_) => "failed".into(),
        };
        telemetry::record_outcome(&span, &outcome);
        drop(span);
        match answer {
            Ok(ack) => {
                let ack = ack.into_inner();
                let period = ack.period.as_ref().map(sitrep_proto::convert::timestamp_from_wire).unwrap_or_default();
                let outcome = ack.outcome().as_str_name().trim_start_matches("OUTCOME_").to_lowercase();
                println!("{outcome}: {} {period} r{}", ack.provider, ack.revision);
                println!("  {}", ack.message);
                if !ack.cursor.is_empty() {
                    println!("  cursor {}", ack.cursor);
                }
                if ack.outcome() == pb::report_ack::Outcome::Conflict {
                    code = ExitCode::from(3);
                }
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                println!("rejected: {}", report.provider);
                match status.get_details_bad_request() {
                    Some(bad) => {
                        for v in bad.field_violations {
                            println!("  {} ({}): {}", v.field, v.reason.to_lowercase(), v.description);
                        }
                    }
                    None => println!("  {}", status.message()),
                }
                code = ExitCode::from(2);
            }
            Err(status) => bail!("{}", server::describe(&args.server.server, &status)),
        }
    }
    Ok(code)
}

async fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let cancel = shutdown_on_signal();
    let request = pb::SubscribeRequest {
        filter: Some(args.who.filter(args.metrics)),
        resume_from: args.resume.unwrap_or_default(),
        heartbeat_seconds: args.heartbeat,
    };
    follow(connect(&args.server)?, args.server.server.clone(), request, !args.quiet, cancel).await
}

/// Subscribes and prints every update until cancelled; reconnects with backoff and resumes from the last cursor.
/// A request the server rejects (a bad filter) is an error, not something to retry.
async fn follow(
    channel: server::Conn,
    server_name: String,
    mut request: pb::SubscribeRequest,
    heartbeats: bool,
    cancel: CancellationToken,
) -> anyhow::Result<ExitCode> {
    // Snapshots carry the whole (filtered) picture in one message: allow more than tonic's 4 MiB default.
    let mut client = SubscriberServiceClient::new(channel).max_decoding_message_size(256 << 20);
    let mut backoff = Backoff::default();
    // Whether the aggregator has sent anything in this run: after that a failed handshake (a certificate being
    // rotated, say) is retried like any other outage.
    let mut answered = false;
    loop {
        let run = async {
            let mut stream = tokio::time::timeout(server::ANSWER_TIMEOUT, client.subscribe(request.clone()))
                .await
                .unwrap_or_else(|_| Err(server::no_answer(server::ANSWER_TIMEOUT)))?
                .into_inner();
            while let Some(update) = stream.message().await? {
                backoff.reset();
                answered = true;
                let cursor = match &update.kind {
                    Some(pb::update::Kind::Event(e)) => Some(&e.cursor),
                    Some(pb::update::Kind::Snapshot(s)) => Some(&s.cursor),
                    Some(pb::update::Kind::Heartbeat(h)) => Some(&h.cursor),
                    Some(pb::update::Kind::Rollups(r)) => Some(&r.cursor),
                    _ => None,
                };
                if let Some(c) = cursor {
                    request.resume_from = c.clone();
                }
                if heartbeats || !matches!(update.kind, Some(pb::update::Kind::Heartbeat(_))) {
                    use std::io::Write;
                    // A closed pipe (`sitrep watch | head`) means nobody is reading any more: stop quietly.
                    if writeln!(std::io::stdout(), "{}", update_line(&update)).is_err() {
                        return Ok(true);
                    }
                }
            }
            Ok::<_, tonic::Status>(false)
        };
        let result = tokio::select! {
            _ = cancel.cancelled() => return Ok(ExitCode::SUCCESS),
            r = run => r,
        };
        match result {
            Ok(true) => return Ok(ExitCode::SUCCESS),
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                let details = status.get_details_bad_request().map(|b| b.field_violations).unwrap_or_default();
                for v in &details {
                    eprintln!("  {}: {}", v.field, v.description);
                }
                bail!("the server rejected the subscription: {}", status.message());
            }
            // Something at that address that is not sitrep will not become sitrep by retrying, nor will a CA or a
            // host name that does not match.
            Err(status) if server::classify(&status).is_configuration() && !answered => {
                bail!("{}", server::describe(&server_name, &status));
            }
            other => {
                let delay = backoff.next_delay();
                match other {
                    Ok(_) => tracing::warn!(retry_in = ?delay, "subscription ended; reconnecting"),
                    Err(status) => {
                        tracing::warn!(retry_in = ?delay, "{}; reconnecting", server::describe(&server_name, &status))
                    }
                }
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(ExitCode::SUCCESS),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

fn time_arg(name: &str, text: &Option<String>) -> anyhow::Result<Option<Timestamp>> {
    text.as_deref()
        .map(|t| {
            Timestamp::parse_rfc3339(t)
                .with_context(|| format!("--{name} {t:?} is not an RFC 3339 time like 2026-11-27T14:00:00Z"))
        })
        .transpose()
}

/// A failed query as an error naming every field violation the server listed.
fn query_failed(status: tonic::Status) -> anyhow::Error {
    let details = status.get_details_bad_request().map(|b| b.field_violations).unwrap_or_default();
    let mut text = status.message().to_owned();
    for v in details {
        text.push_str(&format!("\n  {}: {}", v.field, v.description));
    }
    anyhow::anyhow!(text)
}

async fn hourly(args: HourlyArgs) -> anyhow::Result<ExitCode> {
    let mut client = QueryServiceClient::new(connect(&args.server)?);
    let request = pb::GetHourlyRequest {
        metric: args.metric,
        provider: args.provider.unwrap_or_default(),
        scope: args.scope.unwrap_or_default(),
        hours: args.hours,
        to: None,
    };
    let h = client.get_hourly(request).await.map_err(query_failed)?.into_inner();
    let number = |v: f64| if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") };
    match &h.scope {
        Some(s) => println!("{} for {} {} ({}), hour by hour", h.metric, s.level, s.code, s.name),
        None => println!("{} for {}, hour by hour", h.metric, h.provider),
    }
    for p in &h.points {
        let period = p.period.as_ref().map(sitrep_proto::convert::timestamp_from_wire).unwrap_or_default();
        let value = match (p.value, p.reported) {
            (Some(v), _) => number(v),
            (None, true) if p.absent != 0 => {
                format!("absent ({})", pb::AbsentReason::try_from(p.absent).map_or("?", |r| r.as_str_name()))
            }
            (None, true) => "–".to_owned(),
            (None, false) => "not reported".to_owned(),
        };
        let mut line = format!("{period}  {value:>12}");
        if let Some(c) = p.change {
            line.push_str(&format!("  {}{}", if c >= 0.0 { "+" } else { "" }, number(c)));
        }
        if let Some(r) = p.revision {
            line.push_str(&format!("  r{r}"));
        }
        if p.corrections > 0 {
            line.push_str(&format!("  {} correction(s)", p.corrections));
        }
        if h.scope.is_some() {
            line.push_str(&format!(
                "  {}/{} reported ({:.0}%)",
                p.providers_reported.len(),
                p.providers_expected,
                p.completeness * 100.0
            ));
        }
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn alerts(args: AlertsArgs) -> anyhow::Result<ExitCode> {
    let mut client = QueryServiceClient::new(connect(&args.server)?);
    let filter = args.who.filter(Vec::new());
    let alerts = client.get_alerts(pb::GetAlertsRequest { filter: Some(filter) }).await.map_err(query_failed)?;
    let alerts = alerts.into_inner().alerts;
    println!("{} open alert(s)", alerts.len());
    for a in alerts {
        let since = a.raised_at.as_ref().map(sitrep_proto::convert::timestamp_from_wire).unwrap_or_default();
        let severity = match a.severity() {
            pb::alert::Severity::Critical => "CRITICAL",
            _ => "warning ",
        };
        println!("{severity} since {since}  {}", a.message);
    }
    Ok(ExitCode::SUCCESS)
}

async fn refusals(args: RefusalsArgs) -> anyhow::Result<ExitCode> {
    let mut client = QueryServiceClient::new(connect(&args.server)?);
    let since = Some(sitrep_proto::convert::timestamp_to_wire(Timestamp::now().add_hours(-args.hours.max(1))));
    let answer =
        client.get_refusals(pb::GetRefusalsRequest { since, limit: args.limit }).await.map_err(query_failed)?;
    let answer = answer.into_inner();
    println!("{} refused attempt(s) shown; {} since the aggregator started", answer.refusals.len(), answer.counted);
    for r in answer.refusals {
        let at = r.at.as_ref().map(sitrep_proto::convert::timestamp_from_wire).unwrap_or_default();
        let credential = if r.credential.is_empty() { String::new() } else { format!(" ({})", r.credential) };
        println!("{at} {} {}{credential} from {} -> {}: {}", r.kind, r.principal, r.address, r.target, r.reason);
    }
    Ok(ExitCode::SUCCESS)
}

async fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let to = time_arg("to", &args.to)?.unwrap_or_else(|| Timestamp::now().hour_start());
    let from = time_arg("from", &args.from)?.unwrap_or_else(|| to.add_hours(-(args.hours.max(1) - 1)));
    let wire = |t: Timestamp| Some(sitrep_proto::convert::timestamp_to_wire(t));
    let mut client = QueryServiceClient::new(connect(&args.server)?);
    let failed = query_failed;
    match args.provider {
        Some(provider) => {
            let request = pb::GetHistoryRequest { provider, from: wire(from), to: wire(to), metrics: args.metrics };
            let history = client.get_history(request).await.map_err(failed)?.into_inner();
            println!("{}: {} revision(s) from {from} to {to}", history.provider, history.entries.len());
            for e in history.entries {
                let period = e.period.as_ref().map(sitrep_proto::convert::timestamp_from_wire).unwrap_or_default();
                let mut values: Vec<_> = e.values.iter().collect();
                values.sort_by(|a, b| a.0.cmp(b.0));
                let values: Vec<String> = values.iter().map(|(k, v)| format!("{k}={}", value_text(Some(v)))).collect();
                // A site's report names its site: each site has its own revisions.
                let site = if e.site.is_empty() { String::new() } else { format!(" site {}", e.site) };
                println!("{period}{site} r{} {}", e.revision, values.join(" "));
                if let Some(s) = &e.sender {
                    println!("    sent by {} ({}) from {}", s.name, s.credential, s.address);
                }
                if !e.narrative.is_empty() {
                    println!("    “{}”", e.narrative);
                }
            }
        }
        None => {
            let [metric] = &args.metrics[..] else {
                bail!("give --provider, or exactly one --metric to see that metric across providers");
            };
            let filter = pb::Filter { systems: args.systems, regions: args.regions, ..Default::default() };
            let request = pb::GetMetricHistoryRequest {
                metric: metric.clone(),
                filter: Some(filter),
                from: wire(from),
                to: wire(to),
            };
            let history = client.get_metric_history(request).await.map_err(failed)?.into_inner();
            println!("{}: {} provider(s) from {from} to {to}", history.metric, history.series.len());
            for series in history.series {
                let points: Vec<String> = series
                    .points
                    .iter()
                    .map(|p| {
                        let period =
                            p.period.as_ref().map(sitrep_proto::convert::timestamp_from_wire).unwrap_or_default();
                        format!("{}={}", period.to_string().get(5..16).unwrap_or("?"), value_text(p.value.as_ref()))
                    })
                    .collect();
                println!("{:<6} {}", series.provider, points.join(" "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    if args.seconds_per_hour.is_nan() || args.seconds_per_hour <= 0.0 {
        bail!("--seconds-per-hour must be positive, not {}", args.seconds_per_hour);
    }
    let cancel = shutdown_on_signal();
    let channel = connect(&args.server)?;
    let directory = QueryServiceClient::new(channel.clone())
        .get_directory(pb::GetDirectoryRequest {})
        .await
        .with_context(|| format!("cannot read the directory from {}", args.server.server))?
        .into_inner();
    let providers: Vec<_> = directory
        .providers
        .iter()
        .map(|p| (p.code.clone(), ProviderKind::parse(&p.kind).unwrap_or(ProviderKind::Acute)))
        .collect();
    let options = SimOptions {
        providers: args.providers,
        seconds_per_hour: args.seconds_per_hour,
        backfill_hours: args.backfill_hours,
        seed: args.seed,
        ..Default::default()
    };
    let stats = Arc::new(SimStats::default());
    let progress = {
        let (stats, cancel) = (stats.clone(), cancel.clone());
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(10));
            every.tick().await;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = every.tick() => tracing::info!("simulate: {}", stats.summary()),
                }
            }
        }
    };
    tokio::join!(sitrep_client::sim::run(channel, &providers, options, stats.clone(), cancel), progress);
    println!("simulate: {}", stats.summary());
    Ok(ExitCode::SUCCESS)
}
