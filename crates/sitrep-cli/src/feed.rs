//! `sitrep feed`: the command line of the trust's feed agent. The agent itself (spool, drop-folder watcher,
//! sender) is the `sitrep-feed` crate; this parses the arguments, loads the mapping, connects (TLS and the
//! credential are the CLI's: `crate::server`, `crate::tls`), and tells the agent what a failed call means.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use sitrep_core::input::Format;
use sitrep_feed::{Config, Finished, Input, Upstream};
use sitrep_proto::v1::provider_service_client::ProviderServiceClient;
use tokio_util::sync::CancellationToken;

use crate::server;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    sitrep feed --watch /data/exports --mapping trust.toml --server http://sitrep:50051\n  \
    sitrep feed beds.csv --mapping trust.toml        # one file; exits when it is acknowledged\n  \
    sitrep feed --status                             # the spool's depth and the last acknowledgement\n\n\
    Nothing is lost: reports are fsync'd to the spool (--spool, default ./sitrep-spool) before a file leaves \
    the folder, and removed only when acknowledged; after a restart they are sent again, in order, with the \
    same revisions (so the aggregator sees duplicates, not new reports). Unreadable files and rejected reports \
    go to <folder>/rejected/ with a .reason.txt. See docs/FEEDS.md.")]
pub struct FeedArgs {
    /// The aggregator's address: https://host:port (TLS), http://host:port or host:port (plaintext).
    #[arg(long, short, env = "SITREP_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    #[command(flatten)]
    tls: crate::tls::TlsArgs,
    /// A drop folder to watch: every file that appears in it is read, spooled and sent (runs until stopped).
    #[arg(long)]
    watch: Option<PathBuf>,
    /// Files to send once (- for standard input); the agent exits when all are acknowledged.
    files: Vec<PathBuf>,
    /// The spool: where reports wait until the aggregator has acknowledged them.
    #[arg(long, default_value = "sitrep-spool")]
    spool: PathBuf,
    /// The files' format: json, csv or fhir. Default: from each file's name and content.
    #[arg(long, value_parser = ["json", "csv", "fhir"])]
    format: Option<String>,
    /// A mapping file (TOML) from the trust's own names and codes to sitrep's (see docs/FEEDS.md).
    #[arg(long)]
    mapping: Option<PathBuf>,
    /// Milliseconds between looks at the watched folder.
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// Print the spool's depth and the last acknowledgement, then exit.
    #[arg(long)]
    status: bool,
}

pub async fn run(args: FeedArgs, cancel: CancellationToken) -> anyhow::Result<ExitCode> {
    if args.status {
        let spool = args.spool;
        println!("{}", tokio::task::spawn_blocking(move || sitrep_feed::status(&spool)).await??);
        return Ok(ExitCode::SUCCESS);
    }
    // Connects lazily, but checks the address now rather than spooling for ever towards a bad one.
    let channel = server::connect(&args.server, &args.tls)?;
    let config = Config {
        spool: args.spool,
        watch: args.watch,
        inputs: args
            .files
            .into_iter()
            .map(|f| if f.as_os_str() == "-" { Input::Stdin } else { Input::File(f) })
            .collect(),
        format: args.format.as_deref().and_then(Format::parse),
        mapping: crate::args::load_mapping(args.mapping.as_deref())?,
        poll: Duration::from_millis(args.poll_ms),
    };
    let upstream = Upstream {
        client: ProviderServiceClient::new(channel),
        server: args.server.clone(),
        answer_timeout: server::ANSWER_TIMEOUT,
        diagnose: Box::new(server::Classify { server: args.server }),
    };
    Ok(match sitrep_feed::run(config, upstream, cancel).await? {
        Finished::Sent | Finished::Stopped => ExitCode::SUCCESS,
        Finished::SetAside => ExitCode::from(2),
    })
}
