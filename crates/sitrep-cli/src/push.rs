//! `sitrep push`: reads one file (sitrep JSON, CSV or FHIR, through a mapping) with `sitrep_core::input`, sends
//! each report it holds once, and prints each acknowledgement or every violation. Unlike the feed agent it keeps
//! nothing: what is not acknowledged is reported and the exit status says so (0 accepted or duplicate, 2 rejected,
//! 3 conflict, 1 any other failure).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use sitrep_core::Timestamp;
use sitrep_core::input::{self, Format};
use sitrep_proto::v1 as pb;
use sitrep_proto::v1::provider_service_client::ProviderServiceClient;
use sitrep_telemetry as telemetry;
use tonic_types::StatusExt;

use crate::args::{ServerArg, connect, load_mapping};
use crate::server;

#[derive(Args)]
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
pub struct PushArgs {
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

pub async fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
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
