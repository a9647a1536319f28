//! Signing in a wallboard: a screen cannot send an `authorization` header on its event stream (EventSource has
//! none), and a long-lived secret must not sit in its address or in logs. So an admin makes a **kiosk link**: a
//! short-lived (15 minutes), one-time code in the address of `/kiosk`; opening it on the screen exchanges it for a
//! **session cookie** (HttpOnly, SameSite=Strict, Secure over TLS) that carries the screen's name and read grant,
//! signed, valid for the days the admin chose. Both are HMAC-SHA256-signed with the deployment's session key
//! (`[auth] session_key`, shared by every replica so a session works on any of them and survives restarts);
//! replacing the key ends every session. A code is refused a second time on the replica that took it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// How long a kiosk link may wait to be opened.
pub const LINK_SECONDS: i64 = 15 * 60;
/// The cookie a signed-in screen holds.
pub const COOKIE: &str = "sitrep_session";

/// What a link or a session says: the screen's name, what it may read, until when.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub name: String,
    pub read: Vec<String>,
    /// Seconds since 1970 after which it is refused.
    pub exp: i64,
    /// A link's: the session's length in days. A session's: 0.
    #[serde(default)]
    pub days: u32,
    /// A link's: its one-time nonce.
    #[serde(default)]
    pub nonce: String,
}

/// Signs and checks links and sessions, and remembers the codes already taken.
pub struct Sessions {
    key: hmac::Key,
    taken: Mutex<BTreeMap<String, i64>>,
}

impl Sessions {
    /// With the key's bytes (at least 32).
    pub fn new(secret: &[u8]) -> Result<Self, String> {
        if secret.len() < 32 {
            return Err(format!("the session key has {} bytes; it needs at least 32 random bytes", secret.len()));
        }
        Ok(Sessions { key: hmac::Key::new(hmac::HMAC_SHA256, secret), taken: Mutex::new(BTreeMap::new()) })
    }

    fn sign(&self, claims: &Claims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    fn open(&self, token: &str, now: i64) -> Result<Claims, &'static str> {
        let (payload, tag) = token.split_once('.').ok_or("not a sitrep session")?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| "not a sitrep session")?;
        hmac::verify(&self.key, payload.as_bytes(), &tag).map_err(|_| "signed with another key (ended)")?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("not a sitrep session")?;
        if claims.exp <= now {
            return Err("expired");
        }
        Ok(claims)
    }

    /// A kiosk link's code for a screen named `name` reading `read`, whose session will last `days`.
    pub fn link(&self, name: &str, read: &[String], days: u32, now: i64) -> String {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).expect("the system's random source");
        self.sign(&Claims {
            name: name.to_owned(),
            read: read.to_vec(),
            exp: now + LINK_SECONDS,
            days: days.max(1),
            nonce: URL_SAFE_NO_PAD.encode(nonce),
        })
    }

    /// Takes a link's code (once) and gives the session cookie's value, or why not.
    pub fn take(&self, code: &str, now: i64) -> Result<(String, Claims), &'static str> {
        let link = self.open(code, now)?;
        if link.nonce.is_empty() {
            return Err("not a kiosk link");
        }
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        taken.retain(|_, exp| *exp > now);
        if taken.insert(link.nonce.clone(), link.exp).is_some() {
            return Err("already used: ask for a new link");
        }
        let session = Claims {
            name: link.name,
            read: link.read,
            exp: now + i64::from(link.days) * 86_400,
            days: 0,
            nonce: String::new(),
        };
        Ok((self.sign(&session), session))
    }

    /// The session a cookie's value holds, or why it is no good.
    pub fn session(&self, value: &str, now: i64) -> Result<Claims, &'static str> {
        let claims = self.open(value, now)?;
        if !claims.nonce.is_empty() {
            return Err("a link, not a session");
        }
        Ok(claims)
    }
}

/// The session cookie's value in a `Cookie` header, if there is one.
pub fn cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_taken_once_for_a_session_that_expires() {
        let s = Sessions::new(&[7u8; 32]).unwrap();
        let now = 1_800_000_000;
        let code = s.link("London wall", &["region:Y56".into()], 30, now);
        let (value, session) = s.take(&code, now + 60).unwrap();
        assert_eq!((session.name.as_str(), session.exp), ("London wall", now + 60 + 30 * 86_400));
        assert_eq!(s.take(&code, now + 61).unwrap_err(), "already used: ask for a new link");
        assert_eq!(s.session(&value, now + 100).unwrap().read, ["region:Y56"]);
        assert_eq!(s.session(&value, now + 31 * 86_400).unwrap_err(), "expired");
        assert!(s.session(&code, now).is_err(), "a link is not a session");
        let other = Sessions::new(&[8u8; 32]).unwrap();
        assert!(other.session(&value, now + 100).is_err(), "another key ends every session");
        let late = s.link("x", &[], 1, now);
        assert_eq!(s.take(&late, now + LINK_SECONDS + 1).unwrap_err(), "expired");
        assert!(Sessions::new(b"short").is_err());
        let mut h = axum::http::HeaderMap::new();
        h.insert(axum::http::header::COOKIE, "a=1; sitrep_session=abc.def".parse().unwrap());
        assert_eq!(cookie(&h), Some("abc.def"));
    }
}
