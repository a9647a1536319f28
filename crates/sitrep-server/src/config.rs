//! Configuration: one typed struct, parsed once at start-up from a TOML file, passed explicitly.
//!
//! Every key has a default, so `sitrep serve` runs with no file at all: the built-in NHS England catalogue, the
//! demo directory and the embedded memory store. Unknown keys are errors, so a misspelt key is reported rather than
//! silently ignored. Paths in the file are relative to the file's own directory. Durations ("15m", "1h 30m") are
//! read with `humantime` as the file is ([`Interval`]), so one that is not a duration fails the load at its line,
//! and no reader of the configuration falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

use sitrep_core::critcon::{EXAMPLE_TABLE, Table as CritconTable};
use sitrep_core::opel::{EXAMPLE_FRAMEWORK, Framework};
use sitrep_core::profile::{DEMO_DIRECTORY, NHS_ENGLAND_CATALOGUE};
use sitrep_core::rules::{Staleness, check_cadence, check_grace};
use sitrep_core::{Catalogue, Directory, Limits, Rules};

/// The whole configuration of an aggregator.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on for gRPC (and, later, HTTP on the same port).
    pub listen: SocketAddr,
    /// Directory file (TOML). Default: the built-in demo directory.
    pub directory: Option<PathBuf>,
    /// Metric catalogue file (TOML). Default: the built-in NHS England profile.
    pub catalogue: Option<PathBuf>,
    pub limits: LimitsConfig,
    pub store: StoreConfig,
    pub subscribers: SubscriberConfig,
    pub staleness: StalenessConfig,
    pub opel: OpelConfig,
    pub critcon: CritconConfig,
    pub aid: AidConfig,
    pub wallboard: WallboardConfig,
    pub auth: AuthConfig,
    pub http: HttpConfig,
    pub tls: TlsConfig,
    /// Seconds to let streams drain at shutdown before giving up on them.
    pub shutdown_grace_seconds: u64,
}

/// The HTTP side (the wallboard, the JSON API, Server-Sent Events).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// The Host names browsers reach this deployment by (e.g. "sitrep.nhs.example"). Requests naming another are
    /// refused (421), so a page that rebinds its own name to this server's address cannot read the picture.
    /// Loopback names and the listener's own address are always allowed; empty on an all-interfaces listener:
    /// any name (logged as a warning at start).
    pub allowed_hosts: Vec<String>,
    /// Origins (e.g. "https://portal.nhs.example") whose pages may call the JSON API from the browser, with the
    /// caller's own credential. Empty: cross-origin reads are closed (the default).
    pub cors_origins: Vec<String>,
}

/// Who may call (see `crate::auth`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The principals file: who may write and read what, with their credentials (read again when it changes).
    /// Unset: sitrep is open, every caller may write and read everything.
    pub principals: Option<PathBuf>,
    /// A JWKS file (JSON Web Key Set, read again when it changes) whose keys sign the tokens callers may present
    /// instead of keys: EdDSA (Ed25519), ES256 or RS256, with `sub`, `exp` and the grants in a `sitrep` claim.
    pub jwks: Option<PathBuf>,
    /// The key (a file of at least 32 random bytes, e.g. `openssl rand -out session.key 32`) that signs
    /// wallboards' kiosk links and sessions; every replica needs the same one. Unset: a key made at start, so
    /// sessions end when the process restarts and work on its replica only.
    pub session_key: Option<PathBuf>,
    /// With `jwks`: the issuer (`iss`) tokens must name, if set.
    pub issuer: Option<String>,
    /// With `jwks`: the audience (`aud`) tokens must include, if set.
    pub audience: Option<String>,
    /// Allows an open sitrep (no principals file) on a listener other than loopback. Off: such a listener is
    /// refused at start.
    pub open: bool,
}

/// TLS on the listener: every protocol of the one port (gRPC, gRPC-Web, the JSON API, Server-Sent Events, the
/// wallboard) is served over it once `cert` and `key` are set. The files are read again whenever they change, so a
/// rotated certificate reaches new connections without a restart (see `crate::tls`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain, PEM: the server's certificate first, then any intermediates. With `key`, turns TLS on.
    pub cert: Option<PathBuf>,
    /// The certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1). Never printed.
    pub key: Option<PathBuf>,
    /// The CAs whose client certificates are accepted, PEM. Without it no client certificate is asked for.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: whether a client must present a certificate, or may.
    pub client_auth: ClientAuth,
    /// How often the files are looked at for a new certificate, e.g. "10s".
    pub reload_interval: Interval,
    /// Serve plaintext on an address other than loopback, on purpose: behind a TLS-terminating proxy, or on a
    /// network that is trusted. Without TLS and without this, sitrep serves only on loopback addresses.
    pub allow_plaintext: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            client_ca: None,
            client_auth: ClientAuth::Optional,
            reload_interval: Interval::new("10s"),
            allow_plaintext: false,
        }
    }
}

impl TlsConfig {
    /// Whether TLS is configured (checked: `cert` and `key` come together).
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }
}

/// Whether a client must present a certificate signed by `tls.client_ca`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A client may present a certificate (it is verified if it does) or none.
    Optional,
    /// A client without a certificate signed by `client_ca` fails the TLS handshake.
    Required,
}

/// What every wallboard screen of this deployment shows unless its address says otherwise (`?tz=`, `?theme=`,
/// `?per_page=`, `?rotate=`, `?figures.<type>=`, `?totals=`).
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WallboardConfig {
    /// The time zone of the clock and of every time shown (an IANA name).
    pub timezone: String,
    /// "dark" (for a screen on a wall) or "light".
    pub theme: String,
    /// Providers per page; more turn page by page.
    pub per_page: u32,
    /// Seconds each page shows.
    pub rotate_seconds: u32,
    /// The key figures of each service type's tiles (acute, specialist, mental_health, community, ambulance), as
    /// catalogue codes; a type not named keeps the page's own choice.
    pub figures: std::collections::BTreeMap<String, Vec<String>>,
    /// The figures of the totals (system tiles show the first four); empty: the page's own choice.
    pub totals: Vec<String>,
}

impl Default for WallboardConfig {
    fn default() -> Self {
        WallboardConfig {
            timezone: "Europe/London".into(),
            theme: "dark".into(),
            per_page: 60,
            rotate_seconds: 20,
            figures: Default::default(),
            totals: Vec::new(),
        }
    }
}

impl WallboardConfig {
    /// The figures it names that the catalogue does not have, as (key, code).
    pub fn unknown_figures(&self, catalogue: &Catalogue) -> Vec<(String, String)> {
        let known = |code: &str| catalogue.get(code).is_some() || catalogue.derived(code).is_some();
        let named = self.figures.iter().map(|(kind, codes)| (format!("wallboard.figures.{kind}"), codes));
        named
            .chain(std::iter::once(("wallboard.totals".to_owned(), &self.totals)))
            .flat_map(|(key, codes)| codes.iter().filter(|c| !known(c)).map(move |c| (key.clone(), c.clone())))
            .collect()
    }
}

/// When a quiet provider counts as stale (each provider may override cadence and grace in the directory).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StalenessConfig {
    /// How often providers are expected to report, e.g. "1h".
    pub cadence: Interval,
    /// How late a report may be on top of that before the provider is stale, e.g. "15m".
    pub grace: Interval,
    /// How often each aggregator looks for providers that have gone quiet, e.g. "15s".
    pub check_interval: Interval,
    /// How much older than a provider's latest period one of its readings may be and still count in its figures,
    /// ratings and totals, e.g. "2h" (a metric it stopped sending is shown with its age and counted nowhere).
    pub value_max_age: Interval,
}

impl Default for StalenessConfig {
    fn default() -> Self {
        StalenessConfig {
            cadence: Interval::new("1h"),
            grace: Interval::new("15m"),
            check_interval: Interval::new("15s"),
            value_max_age: Interval::new("2h"),
        }
    }
}

/// How sitrep computes OPEL levels.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OpelConfig {
    /// The framework file (TOML), "example" for the shipped example (to be replaced with the current national
    /// framework), or "" to compute no level.
    pub framework: String,
}

/// How sitrep derives CRITCON levels of systems, regions and the nation (see `sitrep_core::critcon`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CritconConfig {
    /// The rule table file (TOML), "example" for the shipped example (to be replaced with the published rule), or
    /// "" (the default) to derive no level: a derived critical care level is only worth showing once a deployment
    /// has chosen its rule. Loaded and checked at start-up; the picture derives levels with it (rollups carry them).
    pub rules: String,
}

/// Mutual aid's timers (see `docs/MUTUAL-AID.md`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AidConfig {
    /// How long a request may wait with no offer before its system's coordinators are alerted, e.g. "30m".
    pub escalate_to_system_after: Interval,
    /// How long before its region's coordinators are alerted, e.g. "60m" (from when it was made).
    pub escalate_to_region_after: Interval,
}

impl Default for AidConfig {
    fn default() -> Self {
        AidConfig { escalate_to_system_after: Interval::new("30m"), escalate_to_region_after: Interval::new("60m") }
    }
}

impl AidConfig {
    /// The timers, in the core's milliseconds (bounded by `Config::from_file`: no overflow).
    pub fn timers(&self) -> sitrep_core::aid::Timers {
        let ms = |i: &Interval| i.get().as_millis().min(i64::MAX as u128) as i64;
        sitrep_core::aid::Timers {
            system_after_ms: ms(&self.escalate_to_system_after),
            region_after_ms: ms(&self.escalate_to_region_after),
        }
    }
}

/// A duration as the file writes it ("15m", "1h 30m"), read with `humantime` when the file is: a value that is not
/// a duration fails the load (toml's error shows its line, so its key, and the value). The text is kept so that a
/// range check quotes the value as written ("40days", not humantime's "1month 9days 12h 6m 24s").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interval {
    text: String,
    duration: Duration,
}

impl Interval {
    /// A built-in default; `text` is a constant, so a typo in it is a bug (and a test fails).
    fn new(text: &str) -> Interval {
        text.parse().expect("a built-in duration")
    }

    pub fn get(&self) -> Duration {
        self.duration
    }

    /// The value as the file wrote it, for messages.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl std::str::FromStr for Interval {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match humantime::parse_duration(text) {
            Ok(duration) => Ok(Interval { text: text.to_owned(), duration }),
            Err(e) => Err(format!("{text:?} is not a duration like \"15m\" or \"1h 30m\" (rule: duration): {e}")),
        }
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Default for OpelConfig {
    fn default() -> Self {
        OpelConfig { framework: "example".into() }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            directory: None,
            catalogue: None,
            limits: LimitsConfig::default(),
            store: StoreConfig::default(),
            subscribers: SubscriberConfig::default(),
            staleness: StalenessConfig::default(),
            opel: OpelConfig::default(),
            critcon: CritconConfig::default(),
            aid: AidConfig::default(),
            wallboard: WallboardConfig::default(),
            auth: AuthConfig::default(),
            http: HttpConfig::default(),
            tls: TlsConfig::default(),
            shutdown_grace_seconds: 10,
        }
    }
}

/// Bounds on reports (see `sitrep_core::Limits`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest encoded report (or other request) accepted, in bytes; larger ones fail with INVALID_ARGUMENT naming this key.
    pub max_message_bytes: usize,
    pub max_values: usize,
    pub max_narrative_chars: usize,
    pub max_source_chars: usize,
    /// Reports one provider may send a minute (a minute's worth at once, then steadily); more are refused with
    /// RESOURCE_EXHAUSTED and when to retry. 0: no limit.
    pub reports_per_provider_per_minute: u32,
    /// Connections served at once (each wallboard, subscriber and feed holds one); beyond it new connections are
    /// closed at once and a warning says so, so the descriptors stay for those already served.
    pub max_connections: usize,
    pub future_tolerance_seconds: i64,
    /// Hours of history kept; reports for older periods are rejected, and duplicates are recognised this long.
    pub retention_hours: i64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        LimitsConfig {
            max_message_bytes: 1024 * 1024,
            max_values: l.max_values,
            max_narrative_chars: l.max_narrative_chars,
            max_source_chars: l.max_source_chars,
            reports_per_provider_per_minute: 600,
            max_connections: 10_000,
            future_tolerance_seconds: l.future_tolerance_ms / 1000,
            retention_hours: l.retention_hours,
        }
    }
}

impl LimitsConfig {
    pub fn to_limits(&self) -> Limits {
        Limits {
            max_values: self.max_values,
            max_narrative_chars: self.max_narrative_chars,
            max_source_chars: self.max_source_chars,
            future_tolerance_ms: self.future_tolerance_seconds * 1000,
            retention_hours: self.retention_hours,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Redis to keep state in. Without it, the embedded in-memory store is used (nothing survives a restart).
    pub redis: Option<RedisUrl>,
    /// Redis keys are `{key_prefix}:...`, so deployments can share a Redis.
    pub key_prefix: String,
    /// Recent events kept for subscribers to resume from (approximately, on Redis).
    pub event_log_capacity: usize,
    /// On Redis, also trim events older than this many seconds (0: trim by count only).
    pub event_log_max_age_seconds: u64,
    /// On Redis, how long a command may take before the call fails as unavailable, in milliseconds.
    pub redis_timeout_ms: u64,
    /// With a `rediss://` URL: the CA (PEM) that signed Redis's certificate, instead of the system's roots.
    pub redis_ca: Option<PathBuf>,
    /// Redis Sentinel, each as "host:port": the master is the one they name `redis_master`, asked again whenever it
    /// fails over. `redis`, if set, then gives only the master's credentials, database and scheme (rediss:// for
    /// TLS to the master and the Sentinels), and its host must be `redis_master`.
    pub redis_sentinels: Vec<String>,
    /// With `redis_sentinels`: the name the Sentinels monitor the master under.
    pub redis_master: Option<String>,
    /// With `redis_sentinels`: the Sentinels' own password (`requirepass` in sentinel.conf), if they have one.
    pub redis_sentinel_password: Option<Secret>,
    /// Replicas that must have a report (Redis `WAIT`) before it is acknowledged; 0: acknowledged once the master
    /// has it. Falling short answers the report UNAVAILABLE.
    pub ack_replicas: u32,
    /// With `ack_replicas`: how long to wait for the replicas, e.g. "1s".
    pub ack_timeout: Interval,
}

impl StoreConfig {
    /// Whether state is kept in Redis (a URL or Sentinel).
    pub fn uses_redis(&self) -> bool {
        self.redis.is_some() || !self.redis_sentinels.is_empty()
    }

    /// `redis_sentinels` as (host, port); checked by `Config::from_file`, so the unparsable are left out.
    pub fn sentinel_addresses(&self) -> Vec<(String, u16)> {
        self.redis_sentinels.iter().filter_map(|s| parse_host_port(s).ok()).collect()
    }

    /// The `[store]` settings of Redis high availability, checked together.
    fn check_ha(&self) -> Result<(), (&'static str, String)> {
        match (self.redis_sentinels.is_empty(), &self.redis_master) {
            (false, None) => {
                return Err(("store.redis_master", "must name the master the Sentinels monitor when store.redis_sentinels is set (rule: required_with)".into()));
            }
            (true, Some(m)) => {
                return Err((
                    "store.redis_sentinels",
                    format!(
                        "must list the Sentinels (\"host:port\") that monitor store.redis_master = {m:?} (rule: required_with)"
                    ),
                ));
            }
            (true, None) if self.redis_sentinel_password.is_some() => {
                return Err(("store.redis_sentinel_password", "has no effect without store.redis_sentinels".into()));
            }
            _ => {}
        }
        for s in &self.redis_sentinels {
            if let Err(why) = parse_host_port(s) {
                return Err(("store.redis_sentinels", format!("{s:?} is not \"host:port\": {why}")));
            }
        }
        if let (Some(master), Some(url)) = (&self.redis_master, &self.redis) {
            let host = url.host();
            if host != *master {
                return Err((
                    "store.redis",
                    format!(
                        "with store.redis_sentinels, the URL gives the master's credentials and its host must be \
                         store.redis_master ({master:?}), not {host:?}: e.g. redis://:password@{master}/0"
                    ),
                ));
            }
        }
        if self.ack_replicas > 100 {
            return Err(("store.ack_replicas", format!("{} is more than 100 (rule: at_most)", self.ack_replicas)));
        }
        if self.ack_replicas > 0 && !self.uses_redis() {
            return Err(("store.ack_replicas", "needs Redis (store.redis or store.redis_sentinels)".into()));
        }
        let d = self.ack_timeout.get();
        if d < Duration::from_millis(1) || d > Duration::from_secs(60) {
            return Err(("store.ack_timeout", format!("{:?} must be from 1ms to 60s", self.ack_timeout.text())));
        }
        Ok(())
    }
}

/// "host:port" as its parts.
fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s.rsplit_once(':').ok_or("no port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("no host".into());
    }
    let port: u16 = port.parse().map_err(|_| format!("port {port:?} is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err("port 0".into());
    }
    Ok((host.to_owned(), port))
}

/// A password: never printed (Debug shows `***`).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself: for connecting, never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            redis: None,
            key_prefix: "sitrep".into(),
            event_log_capacity: 100_000,
            event_log_max_age_seconds: 0,
            redis_timeout_ms: 2000,
            redis_ca: None,
            redis_sentinels: Vec::new(),
            redis_master: None,
            redis_sentinel_password: None,
            ack_replicas: 0,
            ack_timeout: Interval::new("1s"),
        }
    }
}

/// A Redis URL, which may carry a password: never printed whole (Debug shows it with the password hidden).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn new(url: impl Into<String>) -> Self {
        RedisUrl(url.into())
    }

    /// The full URL, password included: for connecting, never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The host the URL names ("" if none).
    pub fn host(&self) -> String {
        let rest = self.0.split_once("://").map_or(self.0.as_str(), |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or("");
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        match host_port.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host.to_owned(),
            _ => host_port.to_owned(),
        }
    }

    /// The URL with any password replaced by `***`, for logs and errors.
    pub fn redacted(&self) -> String {
        match (self.0.split_once("://"), self.0.rfind('@')) {
            (Some((scheme, rest)), Some(at)) if at > scheme.len() + 3 => {
                let userinfo = &rest[..at - scheme.len() - 3];
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:***@{}", &self.0[at + 1..])
            }
            _ => self.0.clone(),
        }
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriberConfig {
    /// Events queued per subscriber before it counts as slow and is reset.
    pub queue_capacity: usize,
    /// Heartbeat interval when the subscriber does not ask for one.
    pub default_heartbeat_seconds: u32,
    /// Subscriptions (gRPC and Server-Sent Events) one principal may hold open at once; 0: no limit.
    pub per_principal: u32,
    /// A subscriber that takes nothing for this long while its stream is full (it has stopped reading) is
    /// disconnected; it resumes from its cursor when it comes back.
    pub stall_seconds: u64,
}

impl Default for SubscriberConfig {
    fn default() -> Self {
        SubscriberConfig { queue_capacity: 1024, default_heartbeat_seconds: 15, per_principal: 100, stall_seconds: 300 }
    }
}

/// A configuration problem, naming the file and the key or item at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The causes are part of the message rather than `#[source]`s, so a report of the error chain does not
    // repeat them.
    #[error("cannot read {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    #[error("{path}: {cause}")]
    Parse { path: PathBuf, cause: toml::de::Error },
    #[error("{path}: {key}: {message}")]
    Invalid { path: PathBuf, key: &'static str, message: String },
    #[error(transparent)]
    Domain(#[from] sitrep_core::ConfigError),
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|cause| ConfigError::Read { path: path.to_owned(), cause })
}

impl Config {
    /// Reads and checks a configuration file. Relative paths inside it are resolved against its directory.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml(path, &read(path)?)
    }

    /// Parses and checks configuration text as if read from `path` (which names it in errors, and against whose
    /// directory relative paths are resolved). Reads no file.
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|cause| ConfigError::Parse { path: path.to_owned(), cause })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = &mut config.tls;
        let files = [&mut tls.cert, &mut tls.key, &mut tls.client_ca, &mut config.store.redis_ca];
        let auth = [&mut config.auth.principals, &mut config.auth.jwks, &mut config.auth.session_key];
        for p in [&mut config.directory, &mut config.catalogue].into_iter().chain(files).chain(auth).flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for table in [&mut config.opel.framework, &mut config.critcon.rules] {
            if !table.is_empty() && table != "example" && Path::new(table.as_str()).is_relative() {
                *table = base.join(table.as_str()).display().to_string();
            }
        }
        config.check(path)?;
        Ok(config)
    }

    /// Every check, in the order of the file's sections; the first failure is the answer, naming its key.
    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        self.check_bounds(path)?;
        self.check_tls(path)?;
        self.check_wallboard(path)?;
        self.check_staleness(path)?;
        self.check_aid(path)
    }

    /// Capacities, limits and timeouts: each within bounds, so that no arithmetic on them can overflow, and the store's URL and key prefix well formed.
    fn check_bounds(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid =
            |key, message: &str| Err(ConfigError::Invalid { path: path.to_owned(), key, message: message.into() });
        if self.subscribers.queue_capacity == 0 {
            return invalid("subscribers.queue_capacity", "must be at least 1");
        }
        if !(1..=86_400).contains(&self.subscribers.stall_seconds) {
            return invalid("subscribers.stall_seconds", "must be from 1 to 86400 (a day)");
        }
        if !(1..=300).contains(&self.subscribers.default_heartbeat_seconds) {
            return invalid("subscribers.default_heartbeat_seconds", "must be in 1..=300");
        }
        if let Some(url) = &self.store.redis
            && !(url.expose().starts_with("redis://") || url.expose().starts_with("rediss://"))
        {
            return invalid("store.redis", &format!("{} is not a redis:// or rediss:// URL", url.redacted()));
        }
        if let Err((key, message)) = self.store.check_ha() {
            return invalid(key, &message);
        }
        if self.store.key_prefix.is_empty() || self.store.key_prefix.contains(['{', '}']) {
            return invalid("store.key_prefix", "must be non-empty without braces");
        }
        if self.store.event_log_max_age_seconds > 10 * 366 * 24 * 3600 {
            return invalid("store.event_log_max_age_seconds", "must be at most ten years (0 turns age trimming off)");
        }
        if self.store.event_log_capacity == 0 {
            return invalid("store.event_log_capacity", "must be at least 1");
        }
        if self.limits.max_connections == 0 {
            return invalid("limits.max_connections", "must be at least 1");
        }
        if self.limits.max_message_bytes < 1024 {
            return invalid("limits.max_message_bytes", "must be at least 1024");
        }
        // Every duration within sane bounds, so that no arithmetic on them can overflow (refused here, by key).
        if !(1..=10 * 366 * 24).contains(&self.limits.retention_hours) {
            return invalid("limits.retention_hours", "must be from 1 to 87840 (ten years)");
        }
        if !(0..=24 * 3600).contains(&self.limits.future_tolerance_seconds) {
            return invalid("limits.future_tolerance_seconds", "must be from 0 to 86400 (a day)");
        }
        if self.shutdown_grace_seconds > 3600 {
            return invalid("shutdown_grace_seconds", "must be at most 3600 (an hour)");
        }
        if !(1..=600_000).contains(&self.store.redis_timeout_ms) {
            return invalid("store.redis_timeout_ms", "must be from 1 to 600000 (ten minutes)");
        }
        Ok(())
    }

    /// The `[wallboard]` section: a known time zone and theme, page and rotation within bounds, known service types.
    fn check_wallboard(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid =
            |key, message: &str| Err(ConfigError::Invalid { path: path.to_owned(), key, message: message.into() });
        let wb = &self.wallboard;
        if jiff::tz::TimeZone::get(&wb.timezone).is_err() {
            return invalid(
                "wallboard.timezone",
                &format!("{:?} is not a time zone like \"Europe/London\"", wb.timezone),
            );
        }
        if !["dark", "light"].contains(&wb.theme.as_str()) {
            return invalid("wallboard.theme", &format!("{:?} is neither \"dark\" nor \"light\"", wb.theme));
        }
        if !(1..=500).contains(&wb.per_page) {
            return invalid("wallboard.per_page", "must be from 1 to 500");
        }
        if !(3..=3600).contains(&wb.rotate_seconds) {
            return invalid("wallboard.rotate_seconds", "must be from 3 to 3600 (an hour)");
        }
        if let Some(kind) = wb.figures.keys().find(|k| sitrep_core::directory::ProviderKind::parse(k).is_none()) {
            return invalid(
                "wallboard.figures",
                &format!("{kind:?} is not a service type (acute, specialist, mental_health, community, ambulance)"),
            );
        }
        Ok(())
    }

    /// The `[staleness]` durations, each within its own bounds.
    fn check_staleness(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid =
            |key, message: &str| Err(ConfigError::Invalid { path: path.to_owned(), key, message: message.into() });
        let st = &self.staleness;
        for (key, interval) in [
            ("staleness.cadence", &st.cadence),
            ("staleness.grace", &st.grace),
            ("staleness.check_interval", &st.check_interval),
            ("staleness.value_max_age", &st.value_max_age),
        ] {
            let (text, d) = (interval.text(), interval.get());
            let checked = match key {
                "staleness.cadence" => check_cadence(key, text, d),
                "staleness.grace" => check_grace(key, text, d),
                _ if d.is_zero() => Err(format!("{key} must be above zero (rule: above_zero)")),
                "staleness.check_interval" if d > Duration::from_secs(3600) => {
                    Err(format!("{key} {text:?} is longer than 1h (rule: at_most)"))
                }
                // Any other duration of this table: within the same bound as a cadence.
                _ => check_cadence(key, text, d),
            };
            // The message begins with the key; the error names it once.
            if let Err(m) = checked {
                return invalid(key, m.strip_prefix(key).unwrap_or(&m).trim_start());
            }
        }
        Ok(())
    }

    /// The `[aid]` escalation delays: above zero, the region's after the system's.
    fn check_aid(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid =
            |key, message: &str| Err(ConfigError::Invalid { path: path.to_owned(), key, message: message.into() });
        let aid = &self.aid;
        for (key, interval) in [
            ("aid.escalate_to_system_after", &aid.escalate_to_system_after),
            ("aid.escalate_to_region_after", &aid.escalate_to_region_after),
        ] {
            if interval.get().is_zero() {
                return invalid(key, "must be above zero (rule: above_zero)");
            }
        }
        if aid.escalate_to_region_after.get() <= aid.escalate_to_system_after.get() {
            return invalid(
                "aid.escalate_to_region_after",
                &format!(
                    "{:?} must be later than aid.escalate_to_system_after {:?} (rule: after_system)",
                    aid.escalate_to_region_after.text(),
                    aid.escalate_to_system_after.text()
                ),
            );
        }
        Ok(())
    }

    /// The `[tls]` section (and `store.redis_ca`) on its own: settings that go together, and the reload interval.
    /// The files themselves are read when serving starts (`crate::tls`).
    fn check_tls(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid =
            |key, message: &str| Err(ConfigError::Invalid { path: path.to_owned(), key, message: message.into() });
        let tls = &self.tls;
        match (&tls.cert, &tls.key) {
            (Some(_), None) => return invalid("tls.key", "must be set with tls.cert (the certificate's private key)"),
            (None, Some(_)) => return invalid("tls.cert", "must be set with tls.key (the certificate chain)"),
            _ => {}
        }
        if tls.client_ca.is_some() && !tls.enabled() {
            return invalid("tls.client_ca", "needs tls.cert and tls.key (client certificates are asked for over TLS)");
        }
        if tls.client_auth == ClientAuth::Required && tls.client_ca.is_none() {
            return invalid(
                "tls.client_auth",
                "\"required\" needs tls.client_ca (the CAs client certificates are checked against)",
            );
        }
        if tls.allow_plaintext && tls.enabled() {
            return invalid(
                "tls.allow_plaintext",
                "has no effect with tls.cert and tls.key set (everything is served over TLS); remove it",
            );
        }
        let d = tls.reload_interval.get();
        if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
            return invalid("tls.reload_interval", "must be from 100ms to 1h");
        }
        Ok(())
    }

    /// The directory this configuration names (reading its file), or the built-in demo directory.
    pub fn load_directory(&self) -> Result<Directory, ConfigError> {
        Ok(match &self.directory {
            Some(p) => Directory::from_toml(&p.display().to_string(), &read(p)?)?,
            None => Directory::from_toml("built-in demo directory", DEMO_DIRECTORY)?,
        })
    }

    /// The OPEL framework this configuration names (reading its file), the shipped example, or none.
    pub fn load_opel(&self) -> Result<Option<Framework>, ConfigError> {
        Ok(match self.opel.framework.as_str() {
            "" => None,
            "example" => Some(Framework::from_toml("built-in example OPEL framework", EXAMPLE_FRAMEWORK)?),
            path => Some(Framework::from_toml(path, &read(Path::new(path))?)?),
        })
    }

    /// The CRITCON rule table this configuration names (reading its file), the shipped example, or none.
    pub fn load_critcon(&self) -> Result<Option<CritconTable>, ConfigError> {
        Ok(match self.critcon.rules.as_str() {
            "" => None,
            "example" => Some(CritconTable::from_toml("built-in example CRITCON rule", EXAMPLE_TABLE)?),
            path => Some(CritconTable::from_toml(path, &read(Path::new(path))?)?),
        })
    }

    /// Everything derived figures depend on, read and checked against each other.
    pub fn load_rules(&self) -> Result<Rules, ConfigError> {
        let st = &self.staleness;
        let (cadence, grace, value_max_age) = (st.cadence.get(), st.grace.get(), st.value_max_age.get());
        let catalogue = self.load_catalogue()?;
        if let Some((key, code)) = self.wallboard.unknown_figures(&catalogue).into_iter().next() {
            let message = format!("{key}: {code:?} is not a metric of the catalogue {}", catalogue.profile);
            return Err(sitrep_core::ConfigError::Invalid { what: "configuration".into(), message }.into());
        }
        Ok(Rules::new(
            Arc::new(catalogue),
            Arc::new(self.load_directory()?),
            self.load_opel()?.map(Arc::new),
            Staleness { cadence, grace, value_max_age },
        )?
        .with_critcon(self.load_critcon()?.map(Arc::new))?)
    }

    /// The catalogue this configuration names (reading its file), or the built-in NHS England profile.
    pub fn load_catalogue(&self) -> Result<Catalogue, ConfigError> {
        Ok(match &self.catalogue {
            Some(p) => Catalogue::from_toml(&p.display().to_string(), &read(p)?)?,
            None => Catalogue::from_toml("built-in nhs-england catalogue", NHS_ENGLAND_CATALOGUE)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration file in a directory of its own (its siblings are the files it names), removed with
    /// everything in it when this is dropped.
    struct Written {
        path: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl std::ops::Deref for Written {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.path
        }
    }

    fn write(name: &str, text: &str) -> Written {
        let dir = tempfile::Builder::new().prefix(&format!("sitrep-config-{name}-")).tempdir().unwrap();
        let path = dir.path().join("sitrep.toml");
        std::fs::write(&path, text).unwrap();
        Written { path, _dir: dir }
    }

    #[test]
    fn defaults_and_overrides() {
        let path = write("ok", "listen = \"0.0.0.0:9000\"\n[subscribers]\nqueue_capacity = 8\n");
        let c = Config::from_file(&path).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.subscribers.queue_capacity, 8);
        assert_eq!(c.subscribers.default_heartbeat_seconds, 15);
        assert_eq!(c.load_catalogue().unwrap().profile, "nhs-england");
        assert!(c.load_directory().unwrap().provider("RJ7").is_some());
        let rules = c.load_rules().unwrap();
        assert!(rules.opel.as_ref().is_some_and(|f| f.example), "the example framework, labelled as one");
        assert!(rules.critcon.is_none(), "no CRITCON rule unless one is chosen");
        assert_eq!(rules.stale_after("RJ7"), Duration::from_secs(75 * 60));
    }

    #[test]
    fn redis_passwords_are_never_printed() {
        let url = RedisUrl::new("redis://sitrep:hunter2@redis.internal:6379/0");
        assert_eq!(url.redacted(), "redis://sitrep:***@redis.internal:6379/0");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(RedisUrl::new("redis://127.0.0.1:6379/").redacted(), "redis://127.0.0.1:6379/");
        let path = write("redis", "[store]\nredis = \"http://x\"\n");
        let err = Config::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("store.redis: http://x is not a redis://"), "{err}");
    }

    #[test]
    fn sentinel_settings_are_read() {
        let text = "[store]\nredis_sentinels = [\"10.0.0.1:26379\", \"[::1]:26380\"]\nredis_master = \"sitrep\"\n\
                    redis_sentinel_password = \"s3cret\"\nredis = \"rediss://:pw@sitrep/2\"\nack_replicas = 1\n\
                    ack_timeout = \"250ms\"\n";
        let c = Config::from_file(&write("sentinel", text)).unwrap();
        assert!(c.store.uses_redis());
        assert_eq!(c.store.sentinel_addresses(), [("10.0.0.1".to_owned(), 26379), ("::1".to_owned(), 26380)]);
        assert_eq!(c.store.ack_timeout.get(), Duration::from_millis(250));
        assert!(!format!("{c:?}").contains("s3cret"), "the Sentinel password is never printed");
    }

    #[test]
    fn tls_files_are_relative_to_the_configuration() {
        let path =
            write("tls", "[tls]\ncert = \"tls/tls.crt\"\nkey = \"/etc/k.pem\"\n[store]\nredis_ca = \"ca.pem\"\n");
        let c = Config::from_file(&path).unwrap();
        let base = path.parent().unwrap();
        assert_eq!(c.tls.cert.as_deref(), Some(base.join("tls/tls.crt").as_path()));
        assert_eq!(c.tls.key.as_deref(), Some(Path::new("/etc/k.pem")));
        assert_eq!(c.store.redis_ca.as_deref(), Some(base.join("ca.pem").as_path()));
        assert!(c.tls.enabled());
        assert_eq!(c.tls.reload_interval.get(), Duration::from_secs(10));
    }

    #[test]
    fn wallboard_figures_must_be_in_the_catalogue() {
        let path = write("figures", "[wallboard]\ntotals = [\"beds.cc_adult.free\", \"beds.nope\"]\n");
        let err = Config::from_file(&path).unwrap().load_rules().unwrap_err().to_string();
        assert!(err.contains("wallboard.totals: \"beds.nope\" is not a metric of the catalogue"), "{err}");
        let ok = write("figures-ok", "[wallboard.figures]\nmental_health = [\"beds.mh_adult.occupancy\"]\n");
        assert!(Config::from_file(&ok).unwrap().load_rules().is_ok());
    }

    #[test]
    fn critcon_rules_are_read_relative_to_the_configuration_and_checked() {
        let path = write("critcon-example", "[critcon]\nrules = \"example\"\n");
        let rules = Config::from_file(&path).unwrap().load_rules().unwrap();
        assert!(rules.critcon.as_ref().is_some_and(|t| t.example), "the example rule, labelled as one");

        let path = write("critcon-file", "[critcon]\nrules = \"critcon.toml\"\n");
        let table = path.with_file_name("critcon.toml");
        let rule = "[[rule]]\ncode = \"s4\"\nscope = \"system\"\nlevel = 4\ncount_at = 3\n";
        std::fs::write(&table, format!("name = \"ours\"\n{rule}min_count = 2\n")).unwrap();
        let config = Config::from_file(&path).unwrap();
        assert_eq!(Path::new(&config.critcon.rules), table, "relative to the configuration's directory");
        let rules = config.load_rules().unwrap();
        assert_eq!(
            rules.critcon.as_ref().map(|t| (t.name.as_str(), t.example, t.rules.len())),
            Some(("ours", false, 1))
        );

        std::fs::write(&table, format!("name = \"ours\"\n{rule}min_share = 2\n")).unwrap();
        let err = config.load_rules().unwrap_err().to_string();
        assert!(
            err.contains("critcon.toml") && err.contains("rule s4: min_share 2 must be above 0 and at most 1"),
            "{err}"
        );
    }

    #[test]
    fn the_example_file_documents_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/sitrep.example.toml");
        assert_eq!(Config::from_file(&example).unwrap(), Config::default());
    }

    /// The configurations shipped for Kubernetes (deploy/k8s) are read by this build, including the overlay's
    /// Sentinel settings with the Redis URL its Secret is documented to hold (docs/OPERATIONS.md, Configure).
    #[test]
    fn the_kubernetes_configurations_load() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/k8s");
        for file in ["base/config/sitrep.toml", "overlays/example/sitrep.toml"] {
            let path = deploy.join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            Config::from_toml(&path, &text).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
        let overlay = deploy.join("overlays/example/sitrep.toml");
        let text = std::fs::read_to_string(&overlay)
            .unwrap()
            .replace("[store]\n", "[store]\nredis = \"redis://:secret@sitrep/0\"\n");
        let config = Config::from_toml(&overlay, &text).unwrap();
        assert_eq!(config.store.redis_master.as_deref(), Some("sitrep"));
        assert_eq!(config.store.ack_replicas, 1);
    }

    #[test]
    fn a_duration_that_is_not_one_fails_the_load_at_its_line() {
        let keys = [
            ("staleness", "cadence"),
            ("staleness", "grace"),
            ("staleness", "check_interval"),
            ("staleness", "value_max_age"),
            ("aid", "escalate_to_system_after"),
            ("aid", "escalate_to_region_after"),
            ("store", "ack_timeout"),
            ("tls", "reload_interval"),
        ];
        for (table, key) in keys {
            let text = format!("[{table}]\n{key} = \"soon\"\n");
            let err = Config::from_toml(Path::new("s.toml"), &text).unwrap_err().to_string();
            assert!(err.starts_with("s.toml: TOML parse error at line 2"), "{err}");
            assert!(err.contains(&format!("{key} = \"soon\"")), "{err}");
            assert!(err.contains("\"soon\" is not a duration like \"15m\" or \"1h 30m\" (rule: duration)"), "{err}");
        }
        let d = Config::default();
        assert_eq!(d.staleness.cadence.get(), Duration::from_secs(3600));
        assert_eq!(d.aid.timers(), sitrep_core::aid::Timers::default());
        let c = Config::from_toml(Path::new("s.toml"), "[staleness]\ngrace = \"1h 30m\"\n").unwrap();
        assert_eq!((c.staleness.grace.get(), c.staleness.grace.text()), (Duration::from_secs(5400), "1h 30m"));
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let cases = [
            (
                "tz",
                "[wallboard]\ntimezone = \"Mars/Olympus\"\n",
                "wallboard.timezone: \"Mars/Olympus\" is not a time zone",
            ),
            ("theme", "[wallboard]\ntheme = \"blue\"\n", "wallboard.theme: \"blue\" is neither"),
            ("pages", "[wallboard]\nper_page = 0\n", "wallboard.per_page: must be from 1 to 500"),
            (
                "kind",
                "[wallboard.figures]\nhospice = [\"ed.over_12h\"]\n",
                "wallboard.figures: \"hospice\" is not a service type",
            ),
            ("typo", "lisen = \"0.0.0.0:1\"\n", "unknown field `lisen`"),
            ("zero", "[subscribers]\nqueue_capacity = 0\n", "subscribers.queue_capacity: must be at least 1"),
            ("cadence", "[staleness]\ncadence = \"hourly\"\n", "\"hourly\" is not a duration like \"15m\""),
            ("cadence0", "[staleness]\ncadence = \"0s\"\n", "staleness.cadence: must be above zero"),
            (
                "cadence-huge",
                "[staleness]\ncadence = \"500000000years\"\n",
                "staleness.cadence: \"500000000years\" is longer than 31 days (rule: at_most)",
            ),
            ("grace-huge", "[staleness]\ngrace = \"40days\"\n", "staleness.grace: \"40days\" is longer than 31 days"),
            ("check", "[staleness]\ncheck_interval = \"2h\"\n", "staleness.check_interval: \"2h\" is longer than 1h"),
            (
                "retention",
                "[limits]\nretention_hours = 9223372036854775807\n",
                "limits.retention_hours: must be from 1",
            ),
            ("future", "[limits]\nfuture_tolerance_seconds = 9223372036854775807\n", "limits.future_tolerance_seconds"),
            (
                "future-neg",
                "[limits]\nfuture_tolerance_seconds = -1\n",
                "limits.future_tolerance_seconds: must be from 0",
            ),
            (
                "shutdown",
                "shutdown_grace_seconds = 18446744073709551615\n",
                "shutdown_grace_seconds: must be at most 3600",
            ),
            ("redis-timeout", "[store]\nredis_timeout_ms = 0\n", "store.redis_timeout_ms: must be from 1"),
            (
                "sentinel-master",
                "[store]\nredis_sentinels = [\"10.0.0.1:26379\"]\n",
                "store.redis_master: must name the master the Sentinels monitor when store.redis_sentinels is set",
            ),
            (
                "master-sentinels",
                "[store]\nredis_master = \"m\"\n",
                "store.redis_sentinels: must list the Sentinels (\"host:port\") that monitor store.redis_master = \"m\"",
            ),
            (
                "sentinel-port",
                "[store]\nredis_sentinels = [\"10.0.0.1\"]\nredis_master = \"m\"\n",
                "store.redis_sentinels: \"10.0.0.1\" is not \"host:port\": no port",
            ),
            (
                "sentinel-url",
                "[store]\nredis = \"redis://:pw@10.0.0.9/0\"\nredis_sentinels = [\"a:26379\"]\nredis_master = \"m\"\n",
                "store.redis: with store.redis_sentinels, the URL gives the master's credentials and its host must be \
                 store.redis_master (\"m\"), not \"10.0.0.9\"",
            ),
            (
                "sentinel-password",
                "[store]\nredis_sentinel_password = \"x\"\n",
                "store.redis_sentinel_password: has no effect without store.redis_sentinels",
            ),
            (
                "ack-redis",
                "[store]\nack_replicas = 1\n",
                "store.ack_replicas: needs Redis (store.redis or store.redis_sentinels)",
            ),
            (
                "ack-timeout",
                "[store]\nredis = \"redis://r/\"\nack_replicas = 1\nack_timeout = \"soon\"\n",
                "\"soon\" is not a duration like \"15m\" or \"1h 30m\" (rule: duration)",
            ),
            ("tls-pair", "[tls]\ncert = \"c.pem\"\n", "tls.key: must be set with tls.cert"),
            (
                "tls-required",
                "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_auth = \"required\"\n",
                "tls.client_auth: \"required\" needs tls.client_ca",
            ),
            ("tls-ca", "[tls]\nclient_ca = \"ca.pem\"\n", "tls.client_ca: needs tls.cert and tls.key"),
            ("tls-reload", "[tls]\nreload_interval = \"1ms\"\n", "tls.reload_interval: must be from 100ms to 1h"),
            (
                "tls-both",
                "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nallow_plaintext = true\n",
                "tls.allow_plaintext: has no effect",
            ),
            ("tls-auth", "[tls]\nclient_auth = \"sometimes\"\n", "unknown variant `sometimes`"),
            ("opel", "[opel]\nframework = \"opel.toml\"\n", "cannot read"),
            ("critcon", "[critcon]\nrules = \"critcon.toml\"\n", "cannot read"),
            ("critcon-key", "[critcon]\nrule = \"critcon.toml\"\n", "unknown field `rule`"),
            ("missing", "directory = \"nope.toml\"\n", "cannot read"),
        ];
        for (name, text, expected) in cases {
            let path = write(name, text);
            let err = Config::from_file(&path).and_then(|c| c.load_rules().map(|_| c)).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
            assert!(
                err.contains("sitrep.toml")
                    || err.contains("nope.toml")
                    || err.contains("opel.toml")
                    || err.contains("critcon.toml"),
                "{err:?} names the file"
            );
        }
    }
}
