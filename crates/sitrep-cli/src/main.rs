//! `sitrep`: the command-line entry point. Thin by design: it parses arguments, sets up logging and the shutdown
//! signal, and hands each command to its module, which calls into `sitrep-server` (serve), `sitrep-client`
//! (simulate, the resuming subscription behind watch, renderings for watch and aid), `sitrep-feed` (feed) or the
//! generated gRPC clients.
//!
//! # Layout
//! - `serve`: `sitrep serve` (with `--demo`) and `sitrep key`, the aggregator's process and its keys.
//! - `push`: `sitrep push`, one file's reports sent once.
//! - `feed`: `sitrep feed`, the command line of the `sitrep-feed` agent.
//! - `watch`: `sitrep watch`, every change of `sitrep_client::follow`'s subscription printed (also `--demo`'s
//!   printer).
//! - `query`: `sitrep history`, `hourly`, `alerts`, `refusals`: one query each, printed.
//! - `simulate`: `sitrep simulate`, synthetic providers from the aggregator's directory.
//! - `aid`: `sitrep aid ...`, mutual aid.
//! - `bench`: `sitrep bench` and its hidden gRPC floor.
//! - `args`: the arguments several commands share (the server, the providers, a mapping file).
//! - `server`, `tls`: connecting to an aggregator, and failures explained for people (and told apart for the
//!   library's retrying clients: `server::Classify`).
//!
//! Each command's arguments, with their examples (`after_help`), live beside its body; the one-line summaries that
//! `sitrep --help` lists are the variants' doc comments below.

mod aid;
mod args;
mod bench;
mod feed;
mod push;
mod query;
mod serve;
mod server;
mod simulate;
mod tls;
mod watch;

// Measured: with the system allocator, allocation and freeing took about 40% of the aggregator's CPU under load
// (`docs/PERFORMANCE.md`); mimalloc's thread-local free lists cost a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sitrep_telemetry::{self as telemetry, Role, Telemetry};
use tokio_util::sync::CancellationToken;

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
    Serve(serve::ServeArgs),
    /// Send one report from a JSON file and print the acknowledgement.
    Push(push::PushArgs),
    /// Run a trust's feed agent: read exported files (CSV, JSON, FHIR) from a drop folder or the command line,
    /// keep them in an on-disk spool, and stream them to the aggregator until each is acknowledged.
    Feed(feed::FeedArgs),
    /// Subscribe to changes and print each as a line.
    Watch(watch::WatchArgs),
    /// Stream synthetic reports from the directory's providers to an aggregator.
    Simulate(simulate::SimulateArgs),
    /// Print the hour-by-hour history of a provider, or of a metric across providers.
    History(query::HistoryArgs),
    /// Print one metric hour by hour for a provider, a system, a region or the nation: value, change since the
    /// previous hour, corrections, and which providers reported (completeness).
    Hourly(query::HourlyArgs),
    /// Print the open alerts (threshold, escalation, stale, jump, OPEL mismatch).
    Alerts(query::AlertsArgs),
    /// Benchmark the hot path against a real Redis, with a baseline of the bare Redis work.
    Bench(bench::BenchArgs),
    /// Print the attempts the aggregator refused (unauthenticated, outside a grant, over a limit): the audit of
    /// who has been knocking. Needs a key with the admin grant.
    Refusals(query::RefusalsArgs),
    /// Mutual aid: ask for capacity, offer it, accept, decline, withdraw, move a request on, and see requests,
    /// candidates and measures.
    Aid(aid::AidArgs),
    /// Make an API key for a principal and print the lines to add to the principals file.
    Key(serve::KeyArgs),
    /// `sitrep bench`'s gRPC floor: a server that only decodes reports, writes them raw to Redis and acknowledges.
    #[command(hide = true)]
    BenchFloor {
        #[arg(long)]
        redis: String,
    },
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
    // Only the commands that run until stopped take the shutdown token (and drain on a signal); a one-shot command
    // keeps the default action, so Ctrl-C ends it at once.
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::serve(args, shutdown_on_signal()).await,
            Command::Push(args) => push::push(args).await,
            Command::Feed(args) => feed::run(args, shutdown_on_signal()).await,
            Command::Watch(args) => watch::watch(args, shutdown_on_signal()).await,
            Command::Simulate(args) => simulate::simulate(args, shutdown_on_signal()).await,
            Command::History(args) => query::history(args).await,
            Command::Hourly(args) => query::hourly(args).await,
            Command::Alerts(args) => query::alerts(args).await,
            Command::Bench(args) => bench::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::BenchFloor { redis } => bench::floor(&redis).await.map(|()| ExitCode::SUCCESS),
            Command::Key(args) => Ok(serve::key(args)),
            Command::Refusals(args) => query::refusals(args).await,
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
