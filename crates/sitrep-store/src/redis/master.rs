//! `Masters`: where the Redis master is, and this store's connections to it, replaced when it moves.
//!
//! Redis is named either by a fixed URL or by Redis Sentinel (a master name and the Sentinels that watch it). The
//! connections to the master (the command [`ConnectionManager`], the committer's own `ConnectionManager`, and the
//! address the dedicated blocking `XREAD` connection is made to) form one [`Master`], swapped as a whole.
//!
//! **Following a failover.** An answer that suggests the master has moved marks the current one suspect: a lost or
//! refused connection, or `READONLY` (a demoted master keeps answering reads but refuses writes). The next call
//! asks Sentinel for the master again (at most every [`RESOLVE_EVERY`], so a storm of failing calls asks once) and,
//! if it names another address, or the old one answered `READONLY`, builds new connections; calls under way on the
//! old ones fail as unavailable and are retried by their callers (reports are idempotent). With a fixed URL there
//! is nothing to ask: `READONLY` gets fresh connections (a DNS name or a managed Redis's endpoint may now lead to
//! the new master), and a lost connection is re-established by the `ConnectionManager` itself. With Sentinel the
//! master is also asked for again every [`VERIFY_EVERY`] whatever happens, so a replica of sitrep that only reads
//! (its blocking `XREAD` still answered by an old master that lives on as a replica) moves over too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, ErrorKind, RedisError, ServerErrorKind, TlsMode};

use super::{RedisOptions, unavailable};
use crate::StoreError;

/// Most often Sentinel is asked where the master is while calls keep failing.
const RESOLVE_EVERY: Duration = Duration::from_millis(200);
/// How often Sentinel is asked anyway.
const VERIFY_EVERY: Duration = Duration::from_secs(5);

/// No reason to doubt the current master.
const TRUSTED: u8 = 0;
/// A connection to it was lost or refused: it may have failed over.
const UNREACHABLE: u8 = 1;
/// It refused a write as a replica (`READONLY`): it has been demoted.
const DEMOTED: u8 = 2;

/// Where the master is found.
enum Locator {
    /// A fixed URL.
    Url(redis::Client),
    /// The master Sentinel names (the client remembers which Sentinel answered last).
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// The connections to one master.
pub(super) struct Master {
    /// For connections made on demand (the blocking `XREAD` connection).
    pub client: redis::Client,
    /// Commands and scripts other than the committer's.
    pub conn: ConnectionManager,
    /// The committer's script calls and their `WAIT`s: `WAIT` blocks the connection it is sent on, so it gets its own.
    pub commit: ConnectionManager,
    /// Counts masters this store has connected to: a connection made for an older one is dropped.
    pub generation: u64,
    /// `host:port`, for logs.
    pub address: String,
}

pub(super) struct Masters {
    locator: Locator,
    config: ConnectionManagerConfig,
    commit_config: ConnectionManagerConfig,
    /// The master in use; `None` until Sentinel has first named one. A std lock, held to clone or swap the `Arc`.
    current: std::sync::RwLock<Option<Arc<Master>>>,
    suspect: AtomicU8,
    generations: AtomicU64,
    /// One resolution at a time, and when the last one began.
    resolving: tokio::sync::Mutex<Option<Instant>>,
    /// When Sentinel was last asked, in milliseconds since `started`.
    asked_at: AtomicU64,
    started: Instant,
    timeout: Duration,
}

impl Masters {
    /// Masters for `options`; connects to nothing yet. `url_client` is the client for the URL (with its TLS).
    pub fn new(options: &RedisOptions, url_client: redis::Client) -> Result<Self, StoreError> {
        let timeout = options.response_timeout;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        // A `WAIT` may take its whole timeout before it answers.
        let commit_config = config.clone().set_response_timeout(Some(timeout + options.ack_timeout));
        let (locator, current) = match &options.sentinel {
            None => {
                let master = Self::connect(&url_client, &config, &commit_config, 0)?;
                (Locator::Url(url_client), Some(Arc::new(master)))
            }
            Some(s) => {
                let info = url_client.get_connection_info();
                let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
                let sentinels = s.addresses.iter().map(|(host, port)| match tls {
                    false => ConnectionAddr::Tcp(host.clone(), *port),
                    true => {
                        ConnectionAddr::TcpTls { host: host.clone(), port: *port, insecure: false, tls_params: None }
                    }
                });
                let redis = info.redis_settings();
                let mut b = SentinelClientBuilder::new(sentinels, s.master.clone(), SentinelServerType::Master)
                    .map_err(|e| StoreError::Internal(format!("invalid Sentinel settings: {e}")))?
                    .set_client_to_redis_db(redis.db());
                if let Some(user) = redis.username() {
                    b = b.set_client_to_redis_username(user);
                }
                if let Some(password) = redis.password() {
                    b = b.set_client_to_redis_password(password);
                }
                if let Some(password) = &s.password {
                    b = b.set_client_to_sentinel_password(password);
                }
                if tls {
                    b = b
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                    if let Some(pem) = &options.tls_ca_pem {
                        let certificates = || redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) };
                        b = b
                            .set_client_to_redis_certificates(certificates())
                            .set_client_to_sentinel_certificates(certificates());
                    }
                }
                let client = b.build().map_err(|e| StoreError::Internal(format!("invalid Sentinel settings: {e}")))?;
                (Locator::Sentinel(tokio::sync::Mutex::new(client)), None)
            }
        };
        Ok(Masters {
            locator,
            config,
            commit_config,
            current: std::sync::RwLock::new(current),
            suspect: AtomicU8::new(TRUSTED),
            generations: AtomicU64::new(0),
            resolving: tokio::sync::Mutex::new(None),
            asked_at: AtomicU64::new(0),
            started: Instant::now(),
            timeout,
        })
    }

    fn connect(
        client: &redis::Client,
        config: &ConnectionManagerConfig,
        commit_config: &ConnectionManagerConfig,
        generation: u64,
    ) -> Result<Master, StoreError> {
        let lazy = |c: &ConnectionManagerConfig| {
            ConnectionManager::new_lazy_with_config(client.clone(), c.clone()).map_err(unavailable)
        };
        let address = address_of(client);
        Ok(Master { client: client.clone(), conn: lazy(config)?, commit: lazy(commit_config)?, generation, address })
    }

    fn installed(&self) -> Option<Arc<Master>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The master to send commands to: the current one, or, when it is suspect, the one Sentinel names now.
    /// The generation of the master in use now (0 before the first): what caches of the master's data are keyed by.
    pub fn generation(&self) -> u64 {
        self.current.read().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(0, |m| m.generation)
    }

    pub async fn get(&self) -> Result<Arc<Master>, StoreError> {
        let mut last = match self.installed() {
            Some(m) if self.suspect.load(Ordering::Acquire) == TRUSTED => {
                if !self.due() {
                    return Ok(m);
                }
                // A routine check: one caller makes it, the others carry on with the master they have.
                match self.resolving.try_lock() {
                    Ok(last) => last,
                    Err(_) => return Ok(m),
                }
            }
            _ => self.resolving.lock().await,
        };
        let current = self.installed();
        let suspect = self.suspect.load(Ordering::Acquire);
        if let Some(m) = &current
            && ((suspect == TRUSTED && !self.due()) || last.is_some_and(|t| t.elapsed() < RESOLVE_EVERY))
        {
            // Resolved meanwhile, or just now: use what there is (if it is still wrong, the call fails and retries).
            return Ok(m.clone());
        }
        *last = Some(Instant::now());
        self.suspect.store(TRUSTED, Ordering::Release);
        let client = match &self.locator {
            Locator::Url(client) => client.clone(),
            Locator::Sentinel(sentinel) => {
                self.asked_at.store(self.started.elapsed().as_millis() as u64, Ordering::Release);
                let asked = async { sentinel.lock().await.async_get_client().await };
                match tokio::time::timeout(self.timeout, asked).await {
                    Ok(Ok(client)) => client,
                    failed => {
                        // Sentinel has no reachable master yet (a failover under way), or cannot be reached: keep
                        // what there is, as suspect as it was (a routine check that fails is tried again later).
                        // (Only if nothing marked it meanwhile: a demotion seen since is not forgotten.)
                        let _ = self.suspect.compare_exchange(TRUSTED, suspect, Ordering::AcqRel, Ordering::Acquire);
                        let message = match failed {
                            Ok(Err(e)) => format!(
                                "redis sentinel: no master named store.redis_master is known to store.redis_sentinels \
                                 yet: {e}"
                            ),
                            _ => "redis sentinel: none of store.redis_sentinels answered within store.redis_timeout_ms"
                                .into(),
                        };
                        return current.ok_or(StoreError::Unavailable { message, source: None });
                    }
                }
            }
        };
        let same = current.as_ref().is_some_and(|m| m.address == address_of(&client));
        if same && suspect != DEMOTED {
            return Ok(current.expect("same as the current master"));
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let master = Arc::new(Self::connect(&client, &self.config, &self.commit_config, generation)?);
        match &current {
            Some(old) => {
                tracing::warn!(from = %old.address, to = %master.address, "redis: the master moved; reconnecting")
            }
            None => tracing::info!(master = %master.address, "redis: connecting to the master Sentinel names"),
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(master.clone());
        Ok(master)
    }

    /// Whether Sentinel is due to be asked again, failures or not.
    fn due(&self) -> bool {
        let asked = Duration::from_millis(self.asked_at.load(Ordering::Acquire));
        matches!(self.locator, Locator::Sentinel(_)) && self.started.elapsed().saturating_sub(asked) >= VERIFY_EVERY
    }

    /// Notes what a failed call says about the master, and maps the error.
    pub fn failed(&self, e: RedisError) -> StoreError {
        let demoted = matches!(e.kind(), ErrorKind::Server(ServerErrorKind::ReadOnly)) || {
            let text = e.to_string();
            // A demoted master refuses writes (READONLY), unblocks blocked calls (UNBLOCKED ... master -> replica)
            // and refuses WAIT ("WAIT cannot be used with replica instances").
            ["READONLY", "MASTERDOWN", "UNBLOCKED", "replica instances"].iter().any(|code| text.contains(code))
        };
        if demoted {
            self.suspect.store(DEMOTED, Ordering::Release);
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
            // Only Sentinel can say where a master that went away has gone; a fixed URL reconnects by itself.
            if matches!(self.locator, Locator::Sentinel(_)) {
                let _ = self.suspect.compare_exchange(TRUSTED, UNREACHABLE, Ordering::AcqRel, Ordering::Acquire);
            }
        }
        unavailable(e)
    }

    /// Marks the master suspect for a reason found outside a Redis error (a blocking read that timed out).
    pub fn unreachable(&self) {
        if matches!(self.locator, Locator::Sentinel(_)) {
            let _ = self.suspect.compare_exchange(TRUSTED, UNREACHABLE, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

/// A client's `host:port`.
fn address_of(client: &redis::Client) -> String {
    match client.get_connection_info().addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => format!("{host}:{port}"),
        other => other.to_string(),
    }
}
