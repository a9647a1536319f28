//! The arguments several commands share, and what they are turned into: the aggregator to talk to (`ServerArg`,
//! connected by `crate::server`), the providers a command is about (`ProvidersArg`, sent as a `pb::Filter`), and
//! a feed's mapping file (read by `sitrep push` and `sitrep feed` alike).

use anyhow::Context;
use clap::Args;
use sitrep_core::input::Mapping;
use sitrep_proto::v1 as pb;

use crate::{server, tls};

#[derive(Args)]
pub struct ServerArg {
    /// The aggregator's address: https://host:port (TLS), http://host:port or host:port (plaintext).
    #[arg(long, short, env = "SITREP_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    #[command(flatten)]
    pub tls: tls::TlsArgs,
}

/// Which providers a command is about: the union of those listed and those of the systems and regions listed;
/// every provider when none is given.
#[derive(Args)]
pub struct ProvidersArg {
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
    pub fn filter(self, metrics: Vec<String>) -> pb::Filter {
        pb::Filter { providers: self.providers, systems: self.systems, regions: self.regions, metrics }
    }
}

pub fn connect(server: &ServerArg) -> anyhow::Result<server::Conn> {
    server::connect(&server.server, &server.tls)
}

/// A feed's mapping file (see docs/FEEDS.md), or the empty mapping.
pub fn load_mapping(path: Option<&std::path::Path>) -> anyhow::Result<Mapping> {
    let Some(path) = path else { return Ok(Mapping::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Mapping::from_toml(&path.display().to_string(), &text)?)
}
