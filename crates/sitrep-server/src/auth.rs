//! Who is calling, and what they may do: principals, their credentials and grants, and the one function that
//! decides ([`Principal::may`]).
//!
//! Every request passes one layer ([`layer`]) that turns its credential into a [`Principal`] and puts it in the
//! request's extensions, or answers UNAUTHENTICATED (401 over HTTP) itself; every service and route then asks the
//! principal before it acts. Principals are configured in their own file (`[auth] principals`), read again when
//! it changes, so a key is revoked by deleting its line, without a restart.
//!
//! - **Credentials**: API keys (`sitrep_...`, sent as `authorization: Bearer <key>`), stored in the file only as
//!   their SHA-256, with an id that the audit names. `sitrep key` makes one and prints the lines to add.
//! - **Grants**: `write` to providers (a provider's grant covers its sites), `read` to scopes (`provider:RJ7`,
//!   `system:QWE`, `region:Y56`, `nation`, or `*` for everything), `admin` for operational endpoints.
//! - **What a reader sees**: the providers of its read scopes, and the totals of those scopes and of any scope whose
//!   providers it may all read (it could add those up itself). A reader of one system sees its system's totals,
//!   not its region's or the nation's, which would let it work out its neighbours' figures by difference, unless
//!   it is granted them.
//!
//! Without a principals file sitrep is open: every caller is `anonymous` with every grant. That is for a
//! development machine, so it is allowed only on a loopback listener unless `[auth] open = true` says otherwise.

pub mod jwt;
pub mod kiosk;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sitrep_core::{Level, Scope};
use sitrep_core::{Rules, Selection};
use tonic::Status;

use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::transport::Peer;

/// What a caller may do.
#[derive(Clone, Debug, PartialEq)]
pub struct Grants {
    /// Providers it may write for (and their sites); `None`: every provider.
    pub write: Option<BTreeSet<String>>,
    /// The scopes it may read, as configured (`system:QWE`, ...); `None`: everything.
    pub read: Option<BTreeSet<Scope>>,
    /// Providers it may read: those of its read scopes.
    pub readable: Selection,
    pub admin: bool,
    /// Providers it may act for in mutual aid as a coordinator (`coordinate`: the providers of its coordinated
    /// scopes), besides those it writes for.
    pub coordinate: Selection,
}

/// An authenticated caller: who (for the audit), by which credential, and its grants.
#[derive(Clone, Debug, PartialEq)]
pub struct Principal {
    pub name: String,
    /// The credential it presented: a key's id, or `anonymous`.
    pub credential: String,
    pub grants: Arc<Grants>,
}

/// What a principal asks to do.
#[derive(Clone, Copy, Debug)]
pub enum Action<'a> {
    /// Send a report for a provider.
    Write(&'a str),
    /// Read a provider's figures.
    ReadProvider(&'a str),
    /// Read a scope's totals.
    ReadScope(&'a Scope),
    /// Operational endpoints.
    Admin,
    /// Act in mutual aid for a provider (ask, offer, accept, decline, withdraw, progress, cancel): the provider
    /// itself (its write grant) or a coordinator of a scope it is in.
    Broker(&'a str),
}

impl Principal {
    /// The one authorisation decision: `Ok`, or PERMISSION_DENIED naming what was asked and what is granted.
    pub fn may(&self, action: Action<'_>) -> Result<(), Error> {
        let g = &self.grants;
        let allowed = match action {
            Action::Write(p) => g.write.as_ref().is_none_or(|w| w.contains(p)),
            Action::ReadProvider(p) => g.readable.contains(p),
            Action::ReadScope(s) => g.read.as_ref().is_none_or(|r| r.contains(s)),
            Action::Admin => g.admin,
            Action::Broker(p) => g.write.as_ref().is_none_or(|w| w.contains(p)) || g.coordinate.contains(p),
        };
        if allowed {
            return Ok(());
        }
        let list = |set: &Option<BTreeSet<String>>| match set {
            None => "every provider".to_owned(),
            Some(s) if s.is_empty() => "none".to_owned(),
            Some(s) => s.iter().cloned().collect::<Vec<_>>().join(", "),
        };
        let scopes = match &g.read {
            None => "everything".to_owned(),
            Some(s) if s.is_empty() => "nothing".to_owned(),
            Some(s) => s.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "),
        };
        let message = match action {
            Action::Write(p) => {
                format!("{} may not report for provider {p}: its write grant is {}", self.name, list(&g.write))
            }
            Action::ReadProvider(p) => {
                format!("{} may not read provider {p}: its read grant is {scopes}", self.name)
            }
            Action::ReadScope(s) => format!("{} may not read the totals of {s}: its read grant is {scopes}", self.name),
            Action::Admin => format!("{} has no admin grant", self.name),
            Action::Broker(p) => format!(
                "{} may not act in mutual aid for provider {p}: it writes for {} and coordinates {}",
                self.name,
                list(&g.write),
                match &g.coordinate {
                    Selection::All => "every provider".to_owned(),
                    Selection::Only(s) if s.is_empty() => "none".to_owned(),
                    Selection::Only(s) => s.iter().cloned().collect::<Vec<_>>().join(", "),
                }
            ),
        };
        Err(Error::permission_denied(message))
    }

    /// The scopes among `scopes` whose totals it may read.
    pub fn readable_scopes(&self, scopes: Vec<Scope>) -> Vec<Scope> {
        scopes.into_iter().filter(|s| self.may(Action::ReadScope(s)).is_ok()).collect()
    }

    /// The open principal of a deployment without a principals file: every grant.
    pub fn anonymous() -> Self {
        let grants =
            Grants { write: None, read: None, readable: Selection::All, admin: true, coordinate: Selection::All };
        Principal { name: "anonymous".into(), credential: "anonymous".into(), grants: Arc::new(grants) }
    }
}

/// The principals file: `[[principal]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalsFile {
    #[serde(default)]
    principal: Vec<PrincipalEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalEntry {
    name: String,
    #[serde(default)]
    write: Vec<String>,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    admin: bool,
    /// Scopes it coordinates mutual aid for (`system:QWE`, `region:Y56`, `nation`, `*`): it may ask, offer and
    /// decide for their providers.
    #[serde(default)]
    coordinate: Vec<String>,
    /// The organisation it belongs to (`provider:RJ7`, `system:QWE`, ...): it also reads what the directory's
    /// sharing agreements share with that organisation.
    #[serde(default)]
    organisation: Option<String>,
    #[serde(default)]
    key: Vec<KeyEntry>,
    /// Client certificates (verified against `[tls] client_ca`) that identify it, by subject common name
    /// (`CN=feed.rj7`) or subject alternative name (`DNS:feed.rj7.nhs.uk`, `EMAIL:...`, `URI:...`).
    #[serde(default)]
    certificates: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    /// The key's SHA-256, in hex: the key itself is never stored.
    sha256: String,
}

/// Every configured principal, found by the hash of a key it holds, or a name of its client certificate.
#[derive(Debug, Default)]
pub struct Principals {
    by_key: BTreeMap<[u8; 32], Principal>,
    /// `CN=...`, `DNS:...`, `EMAIL:...` or `URI:...` -> the principal.
    by_certificate: BTreeMap<String, Principal>,
}

impl Principals {
    /// Parses and checks a principals file against the directory: every provider and scope named must exist,
    /// every key hash must be 64 hex digits, and no key may belong to two principals.
    pub fn from_toml(what: &str, text: &str, rules: &Rules) -> Result<Self, String> {
        let file: PrincipalsFile = toml::from_str(text).map_err(|e| format!("{what}: {e}"))?;
        let mut by_key = BTreeMap::new();
        let mut by_certificate = BTreeMap::new();
        for p in file.principal {
            let at = |message: String| format!("{what}: principal {:?}: {message}", p.name);
            if p.name.trim().is_empty() {
                return Err(format!("{what}: a principal has an empty name"));
            }
            let mut grants = grants_of(rules, &p.write, &p.read, p.admin, p.organisation.as_deref()).map_err(at)?;
            grants.coordinate = coordinated(rules, &p.coordinate).map_err(at)?;
            let grants = Arc::new(grants);
            for k in p.key {
                let hash =
                    parse_hash(&k.sha256).ok_or_else(|| at(format!("key {:?}: sha256 is not 64 hex digits", k.id)))?;
                let principal = Principal { name: p.name.clone(), credential: k.id.clone(), grants: grants.clone() };
                if by_key.insert(hash, principal).is_some() {
                    return Err(at(format!("key {:?} is configured twice", k.id)));
                }
            }
            for name in &p.certificates {
                if !["CN=", "DNS:", "EMAIL:", "URI:"].iter().any(|prefix| name.starts_with(prefix)) {
                    return Err(at(format!("certificates: {name:?} is not CN=, DNS:, EMAIL: or URI: and a name")));
                }
                let principal = Principal {
                    name: p.name.clone(),
                    credential: format!("certificate {name}"),
                    grants: grants.clone(),
                };
                if by_certificate.insert(name.clone(), principal).is_some() {
                    return Err(at(format!("certificate name {name:?} is configured twice")));
                }
            }
        }
        Ok(Principals { by_key, by_certificate })
    }

    /// The principal holding `key`, if any.
    pub fn find(&self, key: &str) -> Option<&Principal> {
        self.by_key.get(&hash(key))
    }

    /// The principal a client certificate (DER, already verified against the configured CA) names, by its
    /// subject's common name or a subject alternative name; and the names it has, for a message when none maps.
    pub fn for_certificate(&self, der: &[u8]) -> (Option<&Principal>, Vec<String>) {
        let names = certificate_names(der);
        (names.iter().find_map(|n| self.by_certificate.get(n)), names)
    }
}

/// A certificate's names as principals files write them: `CN=...` of its subject, `DNS:`, `EMAIL:` and `URI:` of
/// its subject alternative names.
fn certificate_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let mut names: Vec<String> =
        cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(|cn| format!("CN={cn}")).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(format!("DNS:{d}")),
                GeneralName::RFC822Name(e) => names.push(format!("EMAIL:{e}")),
                GeneralName::URI(u) => names.push(format!("URI:{u}")),
                _ => {}
            }
        }
    }
    names
}

/// Grants as configured (in a principals file or a token's claims), checked against the directory: every
/// provider and scope named must exist; `*` is everything. An organisation also reads what the directory's
/// sharing agreements share with it.
fn grants_of(
    rules: &Rules,
    write: &[String],
    read: &[String],
    admin: bool,
    organisation: Option<&str>,
) -> Result<Grants, String> {
    let write = match write.iter().any(|w| w == "*") {
        true => None,
        false => {
            for w in write {
                if rules.directory.provider(w).is_none() {
                    return Err(format!("write: provider {w:?} is not in the directory"));
                }
            }
            Some(write.iter().cloned().collect())
        }
    };
    let read = match read.iter().any(|r| r == "*") {
        true => None,
        false => {
            let mut grants = read.iter().map(|r| scope_of(rules, r)).collect::<Result<Vec<_>, _>>()?;
            if let Some(org) = organisation {
                if rules.directory.members(org).is_none() {
                    return Err(format!(
                        "organisation: {org:?} is not provider:CODE, system:CODE, region:CODE or nation"
                    ));
                }
                grants.extend(rules.directory.shared_with(org).into_iter().map(ReadGrant::Provider));
            }
            Some(grants)
        }
    };
    Ok(readable(rules, write, read, admin))
}

/// The providers of the scopes a principal coordinates (`system:CODE`, `region:CODE`, `nation`, or `*`).
fn coordinated(rules: &Rules, scopes: &[String]) -> Result<Selection, String> {
    if scopes.iter().any(|s| s == "*") {
        return Ok(Selection::All);
    }
    let mut providers = BTreeSet::new();
    for text in scopes {
        let members = match text.as_str() {
            "nation" => rules.directory.members(text),
            t if t.starts_with("system:") || t.starts_with("region:") => rules.directory.members(t),
            _ => None,
        };
        let members = members.ok_or_else(|| {
            format!("coordinate: {text:?} is not a scope of the directory (system:CODE, region:CODE, nation or *)")
        })?;
        providers.extend(members);
    }
    Ok(Selection::Only(providers))
}

/// A read grant's scope: `provider:CODE` (kept as a provider), `system:CODE`, `region:CODE`, `nation`.
enum ReadGrant {
    Provider(String),
    Scope(Scope),
}

fn scope_of(rules: &Rules, text: &str) -> Result<ReadGrant, String> {
    if let Some(p) = text.strip_prefix("provider:") {
        return match rules.directory.provider(p) {
            Some(_) => Ok(ReadGrant::Provider(p.to_owned())),
            None => Err(format!("read: provider {p:?} is not in the directory")),
        };
    }
    let nation = Scope::new(Level::Nation, &rules.directory.nation().code);
    if text == "nation" {
        return Ok(ReadGrant::Scope(nation));
    }
    match Scope::parse(text).filter(|s| rules.scopes().contains(s)) {
        Some(s) => Ok(ReadGrant::Scope(s)),
        None => Err(format!(
            "read: {text:?} is not a scope of the directory (provider:CODE, system:CODE, region:CODE, nation or *)"
        )),
    }
}

/// The grants of a principal, with the providers its read scopes hold.
fn readable(rules: &Rules, write: Option<BTreeSet<String>>, read: Option<Vec<ReadGrant>>, admin: bool) -> Grants {
    let Some(read) = read else {
        return Grants {
            write,
            read: None,
            readable: Selection::All,
            admin,
            coordinate: Selection::Only(BTreeSet::new()),
        };
    };
    let mut providers = BTreeSet::new();
    let mut scopes = BTreeSet::new();
    for g in read {
        match g {
            ReadGrant::Provider(p) => {
                providers.insert(p);
            }
            ReadGrant::Scope(s) => {
                providers.extend(
                    rules.directory.providers().filter(|p| rules.in_scope(&p.code, &s)).map(|p| p.code.clone()),
                );
                scopes.insert(s);
            }
        }
    }
    // A scope whose providers it may all read adds nothing it could not add up itself: its totals are readable too.
    for scope in rules.scopes() {
        let mut inside = rules.directory.providers().filter(|p| rules.in_scope(&p.code, &scope));
        if inside.all(|p| providers.contains(&p.code)) {
            scopes.insert(scope);
        }
    }
    Grants {
        write,
        read: Some(scopes),
        readable: Selection::Only(providers),
        admin,
        coordinate: Selection::Only(BTreeSet::new()),
    }
}

/// A key's SHA-256.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// A new API key: `sitrep_` and 43 characters of base64url (256 random bits), and its SHA-256 in hex.
pub fn new_key() -> (String, String) {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the system's random source");
    let key = format!("sitrep_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let hex = hash(&key).iter().map(|b| format!("{b:02x}")).collect();
    (key, hex)
}

/// How callers are authenticated: open (nothing configured), or by API keys of a principals file and/or tokens
/// signed by a JWKS's keys, both files read again when they change.
#[derive(Clone)]
pub struct Authenticator {
    principals_file: Option<PathBuf>,
    jwks_file: Option<PathBuf>,
    expect: jwt::Expect,
    rules: Option<Rules>,
    current: Arc<RwLock<Arc<Principals>>>,
    keys: Arc<RwLock<Arc<Vec<jwt::Key>>>>,
    refusals: Arc<crate::audit::Refusals>,
    /// Signs and checks wallboards' kiosk links and session cookies.
    sessions: Arc<kiosk::Sessions>,
    /// Grants made from tokens' claims and sessions, by what they say: worked out against the directory once,
    /// not on every request that carries the same token or cookie.
    claimed: Arc<Mutex<HashMap<GrantKey, Arc<Grants>>>>,
}

/// What grants are made from: write, read, admin, organisation.
type GrantKey = (Vec<String>, Vec<String>, bool, Option<String>, Vec<String>);

/// Claimed grants kept at most; beyond it the cache starts again (tokens are short-lived and few per deployment).
const CLAIMED_KEPT: usize = 1024;

/// A session key made for this process alone: sessions then end when it restarts, and work on this replica only.
fn random_session_key() -> Arc<kiosk::Sessions> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("the system's random source");
    Arc::new(kiosk::Sessions::new(&key).expect("32 bytes"))
}

impl Authenticator {
    /// Who may call, as `config` says: the principals file it names (read and checked against the directory), or
    /// open, which only a loopback listener (`listen`, as finally set) may be unless `[auth] open = true`.
    pub fn from_config(config: &Config, rules: &Rules) -> Result<Self, ConfigError> {
        let invalid = |message: String| sitrep_core::ConfigError::Invalid { what: "configuration".into(), message };
        let a = &config.auth;
        let expect = jwt::Expect { issuer: a.issuer.clone(), audience: a.audience.clone() };
        match (&a.principals, &a.jwks) {
            (None, None) if config.listen.ip().is_loopback() || a.open => Ok(Authenticator::open()),
            (Some(_), _) | (_, Some(_)) => {
                let auth = Authenticator::new(
                    a.principals.as_deref(),
                    a.jwks.as_deref(),
                    a.session_key.as_deref(),
                    expect,
                    rules,
                );
                Ok(auth.map_err(invalid)?)
            }
            (None, None) => Err(invalid(format!(
                "auth.principals: listening on {} with no principals would let anyone who can reach it write and read \
                 everything; name a principals file ([auth] principals), or set [auth] open = true to mean it",
                config.listen
            ))
            .into()),
        }
    }

    /// Open: every caller is [`Principal::anonymous`].
    pub fn open() -> Self {
        Authenticator {
            principals_file: None,
            jwks_file: None,
            expect: jwt::Expect::default(),
            rules: None,
            current: Arc::new(RwLock::new(Arc::new(Principals::default()))),
            keys: Arc::new(RwLock::new(Arc::new(Vec::new()))),
            refusals: Default::default(),
            sessions: random_session_key(),
            claimed: Default::default(),
        }
    }

    /// By the principals in `principals` and the tokens `jwks`'s keys sign (either may be absent, not both), read
    /// now (an error names the file and the problem).
    pub fn new(
        principals: Option<&Path>,
        jwks: Option<&Path>,
        session_key: Option<&Path>,
        expect: jwt::Expect,
        rules: &Rules,
    ) -> Result<Self, String> {
        let loaded = principals.map(|f| load(f, rules)).transpose()?.unwrap_or_default();
        let keys = jwks.map(load_jwks).transpose()?.unwrap_or_default();
        let sessions = match session_key {
            None => {
                tracing::warn!(
                    "no [auth] session_key: wallboard sessions end when this process restarts, and work on this replica only"
                );
                random_session_key()
            }
            Some(file) => {
                let secret = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                Arc::new(kiosk::Sessions::new(&secret).map_err(|e| format!("{}: {e}", file.display()))?)
            }
        };
        Ok(Authenticator {
            principals_file: principals.map(Path::to_owned),
            jwks_file: jwks.map(Path::to_owned),
            expect,
            rules: Some(rules.clone()),
            current: Arc::new(RwLock::new(Arc::new(loaded))),
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            refusals: Default::default(),
            sessions,
            claimed: Default::default(),
        })
    }

    /// Signs and checks kiosk links and wallboard sessions.
    pub fn sessions(&self) -> &kiosk::Sessions {
        &self.sessions
    }

    /// The grants a wallboard session (or a kiosk link about to be made) reads by: `read`, checked.
    pub fn screen_grants(&self, read: &[String]) -> Result<Arc<Grants>, String> {
        self.claimed_grants(&[], read, false, None, &[])
    }

    /// Grants a token or session claims, checked against the directory (once for each distinct claim).
    fn claimed_grants(
        &self,
        write: &[String],
        read: &[String],
        admin: bool,
        organisation: Option<&str>,
        coordinate: &[String],
    ) -> Result<Arc<Grants>, String> {
        let rules = self.rules.as_ref().ok_or("sign-in is for a deployment with principals")?;
        let key: GrantKey =
            (write.to_vec(), read.to_vec(), admin, organisation.map(str::to_owned), coordinate.to_vec());
        if let Some(g) = self.claimed.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(g.clone());
        }
        let mut grants = grants_of(rules, write, read, admin, organisation)?;
        grants.coordinate = coordinated(rules, coordinate)?;
        let grants = Arc::new(grants);
        let mut claimed = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        if claimed.len() >= CLAIMED_KEPT {
            claimed.clear();
        }
        claimed.insert(key, grants.clone());
        Ok(grants)
    }

    /// The refused attempts kept for the audit.
    pub fn refusals(&self) -> &Arc<crate::audit::Refusals> {
        &self.refusals
    }

    pub fn is_open(&self) -> bool {
        self.principals_file.is_none() && self.jwks_file.is_none()
    }

    /// Reads the files again whenever they change (checked every `every`), until `cancel` fires. A file that no
    /// longer parses is logged and what it had stays in force.
    pub async fn watch(self, rules: Rules, every: Duration, cancel: tokio_util::sync::CancellationToken) {
        if self.is_open() {
            return;
        }
        let stamp =
            |f: &Option<PathBuf>| f.as_deref().and_then(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok());
        let mut seen: (Option<SystemTime>, Option<SystemTime>) = (stamp(&self.principals_file), stamp(&self.jwks_file));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let now = (stamp(&self.principals_file), stamp(&self.jwks_file));
            if now.0 != seen.0
                && let Some(file) = &self.principals_file
            {
                match load(file, &rules) {
                    Ok(p) => {
                        let keys = p.by_key.len();
                        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p);
                        tracing::info!(file = %file.display(), keys, "principals read again");
                    }
                    Err(error) => tracing::error!(%error, "principals file not taken: the previous principals stay"),
                }
            }
            if now.1 != seen.1
                && let Some(file) = &self.jwks_file
            {
                match load_jwks(file) {
                    Ok(k) => {
                        let keys = k.len();
                        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(k);
                        tracing::info!(file = %file.display(), keys, "token keys read again");
                    }
                    Err(error) => tracing::error!(%error, "JWKS file not taken: the previous keys stay"),
                }
            }
            seen = now;
        }
    }

    /// The principal `headers` authenticate: `Ok(None)` with no credential, `Err` (UNAUTHENTICATED) with one
    /// that is malformed, unknown, expired or wrongly signed. Open: always the anonymous principal.
    pub fn authenticate(&self, headers: &HeaderMap, peer: Option<&Peer>) -> Result<Option<Principal>, Error> {
        if self.is_open() {
            return Ok(Some(Principal::anonymous()));
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            // No header: a wallboard's session cookie, made from a kiosk link.
            if let Some(cookie) = kiosk::cookie(headers) {
                let claims = self.sessions.session(cookie, unix_now()).map_err(|why| {
                    Error::unauthenticated(format!("this screen's sign-in is no good ({why}): open a new kiosk link"))
                })?;
                let grants = self.screen_grants(&claims.read).map_err(Error::unauthenticated)?;
                return Ok(Some(Principal { name: claims.name, credential: "kiosk session".into(), grants }));
            }
            // Else a client certificate (verified by the TLS handshake) may name the principal.
            let Some(cert) = peer.and_then(|p| p.certificates.as_ref()).and_then(|c| c.first()) else {
                return Ok(None);
            };
            let principals = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
            let (found, names) = principals.for_certificate(cert.as_ref());
            return match found {
                Some(p) => Ok(Some(p.clone())),
                None => Err(Error::unauthenticated(format!(
                    "the client certificate ({}) is not a principal's: add one of its names to the principals file",
                    names.join(", ")
                ))),
            };
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| Error::unauthenticated("the authorization header is not \"Bearer <key or token>\""))?;
        if self.jwks_file.is_some() && jwt::looks_like(token) {
            return self.token(token).map(Some);
        }
        let principals = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        // The key itself is never logged or echoed: an unknown one is only said to be unknown.
        principals.find(token).cloned().map(Some).ok_or_else(|| {
            Error::unauthenticated("the key is not known (revoked, mistyped, or for another deployment)")
        })
    }

    /// The principal a signed token names, with the grants its claims hold.
    fn token(&self, token: &str) -> Result<Principal, Error> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let now = unix_now();
        let (claims, kid) = jwt::verify(token, &keys, &self.expect, now).map_err(Error::unauthenticated)?;
        let g = &claims.sitrep;
        let grants = self
            .claimed_grants(&g.write, &g.read, g.admin, g.organisation.as_deref(), &g.coordinate)
            .map_err(|e| Error::unauthenticated(format!("the token's sitrep claim: {e}")))?;
        let credential = match &claims.jti {
            Some(jti) => format!("token {kid}/{jti}"),
            None => format!("token {kid}"),
        };
        Ok(Principal { name: claims.sub, credential, grants })
    }
}

/// Seconds since 1970, as tokens and sessions count time.
pub(crate) fn unix_now() -> i64 {
    sitrep_core::Timestamp::now().millis() / 1000
}

fn load_jwks(file: &Path) -> Result<Vec<jwt::Key>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    jwt::parse_jwks(&file.display().to_string(), &text)
}

fn load(file: &Path, rules: &Rules) -> Result<Principals, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    Principals::from_toml(&file.display().to_string(), &text, rules)
}

/// Routes anyone may reach without a credential: the wallboard's files (which show a signed-out state by
/// themselves), health, and gRPC health and reflection.
fn public(path: &str) -> bool {
    matches!(path, "/" | "/wallboard.js" | "/wallboard.css" | "/healthz" | "/readyz" | "/kiosk")
        || path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.")
}

/// The layer every request passes: its principal into the request's extensions, or UNAUTHENTICATED (gRPC) / 401
/// (HTTP) for a bad credential, or for none where one is needed. Every refusal, here or by a service after it
/// (outside the grant, over a limit), is recorded for the audit ([`crate::audit`]).
pub async fn layer(
    axum::extract::State(auth): axum::extract::State<Authenticator>,
    mut request: Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let peer = request.extensions().get::<Peer>();
    let mut attempt = crate::audit::Attempt {
        principal: "unauthenticated".into(),
        address: peer.and_then(|p| p.remote_addr).map(|a| a.to_string()).unwrap_or_default(),
        target: path.clone(),
        ..Default::default()
    };
    match auth.authenticate(request.headers(), peer) {
        Ok(Some(principal)) => {
            (attempt.principal, attempt.credential) = (principal.name.clone(), principal.credential.clone());
            request.extensions_mut().insert(principal);
            let response = next.run(request).await;
            // Refused by a service: in the answer's head (gRPC), its HTTP status, or (a gRPC stream) its trailers.
            if let Some(refusal) = crate::audit::refusal_in(response.headers()) {
                auth.refusals.refuse(&attempt, refusal);
                return response;
            }
            if let Some(code) = match response.status() {
                StatusCode::FORBIDDEN => Some(tonic::Code::PermissionDenied),
                StatusCode::TOO_MANY_REQUESTS => Some(tonic::Code::ResourceExhausted),
                _ => None,
            } {
                let reason = response.extensions().get::<crate::audit::Reason>().map(|r| r.0.clone());
                let reason = reason.unwrap_or_else(|| format!("HTTP {}", response.status().as_u16()));
                auth.refusals.refuse(&attempt, crate::audit::refusal_of(code, &reason).expect("a refusal's code"));
                return response;
            }
            let grpc = response
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            if !grpc {
                return response;
            }
            let (parts, body) = response.into_parts();
            let refusals = auth.refusals.clone();
            let body = http_body_util::BodyExt::map_frame(body, move |frame| {
                if let Some(refusal) = frame.trailers_ref().and_then(crate::audit::refusal_in) {
                    refusals.refuse(&attempt, refusal);
                }
                frame
            });
            Response::from_parts(parts, axum::body::Body::new(body))
        }
        // A browser's CORS preflight carries no credential by design: the HTTP guard answers it.
        Ok(None) if public(&path) || request.method() == axum::http::Method::OPTIONS => next.run(request).await,
        Ok(None) => {
            let error = Error::unauthenticated("a credential is needed: authorization: Bearer <key>");
            auth.refusals.refuse(&attempt, error.refusal().expect("a refusal"));
            refuse(&request, error)
        }
        Err(error) => {
            auth.refusals.refuse(&attempt, error.refusal().expect("a refusal"));
            refuse(&request, error)
        }
    }
}

/// A refused credential in the request's own protocol: a gRPC status, or HTTP 401 asking for a bearer credential.
fn refuse(request: &Request, error: Error) -> Response {
    let grpc =
        request.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return Status::from(error).into_http::<axum::body::Body>().into_response();
    }
    let (code, body) = error.http();
    let mut r = (code, axum::Json(body)).into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The principal a request was authenticated as (the layer always puts one in, except on public routes).
pub fn principal_of(extensions: &axum::http::Extensions) -> Result<&Principal, Error> {
    extensions.get::<Principal>().ok_or_else(|| Error::unauthenticated("a credential is needed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_by_their_hash_and_grants_decide() {
        let rules = Rules::demo();
        let (key, hex) = new_key();
        assert!(key.starts_with("sitrep_") && key.len() == 50, "{key}");
        let text = format!(
            "[[principal]]\nname = \"RJ7 feed\"\nwrite = [\"RJ7\"]\nread = [\"system:QWE\"]\n[[principal.key]]\nid = \"k1\"\nsha256 = \"{hex}\"\n"
        );
        let p = Principals::from_toml("p.toml", &text, &rules).unwrap();
        let who = p.find(&key).expect("found by its hash");
        assert_eq!((who.name.as_str(), who.credential.as_str()), ("RJ7 feed", "k1"));
        assert!(p.find("sitrep_other").is_none());
        assert!(who.may(Action::Write("RJ7")).is_ok());
        let denied = who.may(Action::Write("RGT")).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert_eq!(denied.message, "RJ7 feed may not report for provider RGT: its write grant is RJ7");
        assert!(who.may(Action::ReadProvider("RVR")).is_ok(), "RVR is in QWE");
        assert!(who.may(Action::ReadProvider("RGT")).is_err());
        let qwe = Scope::new(Level::System, "QWE");
        let london = Scope::new(Level::Region, "Y56");
        assert!(who.may(Action::ReadScope(&qwe)).is_ok());
        assert!(who.may(Action::ReadScope(&london)).is_err(), "a system's reader does not see its region's totals");
        assert!(who.may(Action::Admin).is_err());
    }

    /// Sharing agreements in the directory add to what an organisation's readers see, and nothing else does.
    #[test]
    fn an_organisation_reads_what_is_shared_with_it() {
        let base = sitrep_core::profile::DEMO_DIRECTORY;
        let shares = "\n[[share]]\nfrom = \"provider:RQY\"\nwith = \"system:QWE\"\n";
        let directory = sitrep_core::Directory::from_toml("d", &format!("{base}{shares}")).unwrap();
        let demo = Rules::demo();
        let rules = Rules::new(demo.catalogue.clone(), Arc::new(directory), demo.opel.clone(), demo.staleness).unwrap();
        let text = "[[principal]]\nname = \"RJ7 reader\"\nread = [\"provider:RJ7\"]\norganisation = \"provider:RJ7\"\n\
                    [[principal.key]]\nid = \"k\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n";
        let p = Principals::from_toml("p", text, &rules).unwrap();
        let who = p.by_key.values().next().unwrap();
        assert!(who.may(Action::ReadProvider("RJ7")).is_ok());
        assert!(who.may(Action::ReadProvider("RQY")).is_ok(), "the mental health trust shares with RJ7's system");
        assert!(who.may(Action::ReadProvider("RVR")).is_err(), "nobody else shares");
        let elsewhere = text
            .replace("provider:RJ7\"\n[", "provider:RGT\"\n[")
            .replace("read = [\"provider:RJ7\"]", "read = [\"provider:RGT\"]");
        let p = Principals::from_toml("p", &elsewhere, &rules).unwrap();
        assert!(p.by_key.values().next().unwrap().may(Action::ReadProvider("RQY")).is_err(), "not with RGT's system");
    }

    #[test]
    fn a_bad_file_names_the_principal_and_the_problem() {
        let rules = Rules::demo();
        let cases = [
            (
                "[[principal]]\nname = \"x\"\nwrite = [\"NOPE\"]\n",
                "principal \"x\": write: provider \"NOPE\" is not in the directory",
            ),
            (
                "[[principal]]\nname = \"x\"\nread = [\"system:NOPE\"]\n",
                "principal \"x\": read: \"system:NOPE\" is not a scope",
            ),
            (
                "[[principal]]\nname = \"x\"\n[[principal.key]]\nid = \"k\"\nsha256 = \"abc\"\n",
                "key \"k\": sha256 is not 64 hex digits",
            ),
            ("[[principal]]\nname = \"x\"\nwrte = []\n", "unknown field `wrte`"),
        ];
        for (text, expected) in cases {
            let err = Principals::from_toml("p.toml", text, &rules).unwrap_err();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }
}
