//! Signed tokens (JWTs) as credentials: verified against the public keys of a JWKS file, with the grants in the
//! token's claims, in the manner of Mercure's and Centrifugo's: an identity provider the deployment trusts issues
//! short-lived tokens, and sitrep needs no list of their holders.
//!
//! A token is accepted when: its header names an algorithm sitrep verifies (`EdDSA` with Ed25519, `ES256`,
//! `RS256`; never `none`), and a key of the JWKS (by `kid` when the header has one) verifies its signature; its
//! `exp` is in the future and its `nbf` (if any) is not; and its `iss` and `aud` are the configured ones (when
//! configured). Its `sub` names the principal; its `sitrep` claim holds the grants:
//! `{"write": ["RJ7"], "read": ["region:Y56"], "admin": false}`, checked against the directory like a principals
//! file's. Tokens are revoked by their expiry, or all of one key's by removing the key from the JWKS file, which is
//! read again when it changes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, UnparsedPublicKey};
use serde::Deserialize;

/// One public key of a JWKS, ready to verify with.
#[derive(Debug)]
pub struct Key {
    kid: Option<String>,
    alg: Alg,
    /// Ed25519: the 32-byte key; ES256: the uncompressed point; RS256: unused (see `n`, `e`).
    public: Vec<u8>,
    n: Vec<u8>,
    e: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alg {
    EdDsa,
    Es256,
    Rs256,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

fn b64(what: &str, text: &Option<String>) -> Result<Vec<u8>, String> {
    let text = text.as_deref().ok_or_else(|| format!("{what} is missing"))?;
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).map_err(|_| format!("{what} is not base64url"))
}

/// The keys of a JWKS document (`{"keys": [...]}`): OKP/Ed25519, EC/P-256 and RSA keys; others are refused with
/// the key named.
pub fn parse_jwks(what: &str, text: &str) -> Result<Vec<Key>, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("{what}: not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for (i, k) in set.keys.into_iter().enumerate() {
        let at = |m: String| format!("{what}: keys[{i}] ({}): {m}", k.kid.as_deref().unwrap_or("no kid"));
        let key = match (k.kty.as_str(), k.crv.as_deref()) {
            ("OKP", Some("Ed25519")) => {
                Key { kid: k.kid.clone(), alg: Alg::EdDsa, public: b64("x", &k.x).map_err(at)?, n: vec![], e: vec![] }
            }
            ("EC", Some("P-256")) => {
                let (x, y) = (b64("x", &k.x).map_err(at)?, b64("y", &k.y).map_err(at)?);
                let public = [&[0x04][..], &x, &y].concat();
                Key { kid: k.kid.clone(), alg: Alg::Es256, public, n: vec![], e: vec![] }
            }
            ("RSA", _) => {
                let (n, e) = (b64("n", &k.n).map_err(at)?, b64("e", &k.e).map_err(at)?);
                Key { kid: k.kid.clone(), alg: Alg::Rs256, public: vec![], n, e }
            }
            (kty, crv) => return Err(at(format!("kty {kty:?} crv {crv:?} is not Ed25519, P-256 or RSA"))),
        };
        keys.push(key);
    }
    Ok(keys)
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// The claims sitrep reads.
#[derive(Debug, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default)]
    pub nbf: Option<i64>,
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub aud: Option<serde_json::Value>,
    #[serde(default)]
    pub jti: Option<String>,
    #[serde(default)]
    pub sitrep: Grants,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    #[serde(default)]
    pub write: Vec<String>,
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub admin: bool,
    /// The organisation the holder belongs to, for the directory's sharing agreements.
    #[serde(default)]
    pub organisation: Option<String>,
    /// Scopes the holder coordinates mutual aid for (`system:QWE`, `region:Y56`, `nation`, `*`).
    #[serde(default)]
    pub coordinate: Vec<String>,
}

/// What a token must say beyond its signature and times.
#[derive(Clone, Debug, Default)]
pub struct Expect {
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// Whether `token` looks like a JWT (three base64url parts), rather than an API key.
pub fn looks_like(token: &str) -> bool {
    token.split('.').count() == 3 && !token.starts_with("sitrep_")
}

/// Verifies `token` against `keys` at `now` (seconds since 1970) and returns its claims and the id of the key that
/// verified it; or why not, in words that say what is wrong without echoing the token.
pub fn verify(token: &str, keys: &[Key], expect: &Expect, now: i64) -> Result<(Claims, String), String> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("the token is not a JWT (header.claims.signature)".into());
    };
    let header: Header = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("the token's header is not base64url JSON")?;
    let alg = match header.alg.as_str() {
        "EdDSA" => Alg::EdDsa,
        "ES256" => Alg::Es256,
        "RS256" => Alg::Rs256,
        other => {
            return Err(format!("the token's algorithm {other:?} is not one sitrep accepts (EdDSA, ES256, RS256)"));
        }
    };
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| "the token's signature is not base64url")?;
    let signed = &token.as_bytes()[..h.len() + 1 + c.len()];
    let candidates = keys.iter().filter(|k| k.alg == alg && (header.kid.is_none() || k.kid == header.kid));
    let mut verified_by = None;
    for k in candidates {
        let ok = match alg {
            Alg::EdDsa => UnparsedPublicKey::new(&signature::ED25519, &k.public).verify(signed, &signature).is_ok(),
            Alg::Es256 => UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &k.public)
                .verify(signed, &signature)
                .is_ok(),
            Alg::Rs256 => signature::RsaPublicKeyComponents { n: &k.n, e: &k.e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, &signature)
                .is_ok(),
        };
        if ok {
            verified_by = Some(k.kid.clone().unwrap_or_else(|| "jwks".into()));
            break;
        }
    }
    let kid = verified_by.ok_or("the token's signature is not from a key of the configured JWKS")?;
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("the token's claims are not JSON with sub, exp and (optionally) sitrep {write, read, admin}")?;
    if claims.exp <= now {
        return Err(format!("the token expired {} s ago: ask its issuer for a new one", now - claims.exp));
    }
    if claims.nbf.is_some_and(|nbf| nbf > now) {
        return Err("the token is not valid yet (nbf)".into());
    }
    if let Some(iss) = &expect.issuer
        && claims.iss.as_deref() != Some(iss.as_str())
    {
        return Err("the token's issuer (iss) is not the configured one".into());
    }
    if let Some(aud) = &expect.audience {
        let matches = match &claims.aud {
            Some(serde_json::Value::String(a)) => a == aud,
            Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(aud.as_str())),
            _ => false,
        };
        if !matches {
            return Err("the token's audience (aud) is not this deployment".into());
        }
    }
    Ok((claims, kid))
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    /// Signs `claims` with a new Ed25519 key; returns the token and the JWKS with its public key.
    pub fn ed25519_token(kid: &str, claims: &serde_json::Value) -> (String, String) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let header = serde_json::json!({ "alg": "EdDSA", "kid": kid, "typ": "JWT" });
        let signed =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(pair.sign(signed.as_bytes())));
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let jwks = serde_json::json!({ "keys": [{ "kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x }] });
        (token, jwks.to_string())
    }

    #[test]
    fn ed25519_and_es256_tokens_verify_and_their_failures_say_why() {
        let now = 1_800_000_000;
        let claims = serde_json::json!({ "sub": "wall", "exp": now + 60, "sitrep": { "read": ["region:Y56"] } });
        let (token, jwks) = ed25519_token("k1", &claims);
        let keys = parse_jwks("jwks.json", &jwks).unwrap();
        let (c, kid) = verify(&token, &keys, &Expect::default(), now).unwrap();
        assert_eq!((c.sub.as_str(), kid.as_str(), c.sitrep.read.len()), ("wall", "k1", 1));
        assert!(looks_like(&token) && !looks_like("sitrep_abc"));
        assert!(verify(&token, &keys, &Expect::default(), now + 61).unwrap_err().contains("expired"));
        // A token signed by another key, or altered, is refused.
        let (other, _) = ed25519_token("k1", &claims);
        assert!(verify(&other, &keys, &Expect::default(), now).unwrap_err().contains("not from a key"));
        let mut altered = token.clone();
        altered.insert(token.find('.').unwrap() + 2, 'A');
        assert!(verify(&altered, &keys, &Expect::default(), now).is_err());
        let none =
            format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), URL_SAFE_NO_PAD.encode(claims.to_string()));
        assert!(verify(&none, &keys, &Expect::default(), now).unwrap_err().contains("\"none\""));
        let expect = Expect { issuer: Some("https://idp".into()), audience: None };
        assert!(verify(&token, &keys, &expect, now).unwrap_err().contains("issuer"));

        // ES256.
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        let (x, y) = (URL_SAFE_NO_PAD.encode(&point[1..33]), URL_SAFE_NO_PAD.encode(&point[33..]));
        let jwks = serde_json::json!({ "keys": [{ "kty": "EC", "crv": "P-256", "x": x, "y": y }] }).to_string();
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256"}"#);
        let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(pair.sign(&rng, signed.as_bytes()).unwrap()));
        let keys = parse_jwks("jwks.json", &jwks).unwrap();
        assert_eq!(verify(&token, &keys, &Expect::default(), now).unwrap().0.sub, "wall");
    }

    /// RS256 with a key `openssl` makes (ring cannot generate RSA keys): the JWKS's n and e verify ring's
    /// signature, and a token signed by another RSA key is refused.
    #[test]
    fn rs256_tokens_verify_with_an_rsa_jwk() {
        let tmp = tempfile::Builder::new().prefix("sitrep-rs256-").tempdir().unwrap();
        let dir = tmp.path();
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl").args(args).current_dir(dir).output();
            let out = out.expect("openssl (./scripts/test installs it)");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            out.stdout
        };
        let make = |name: &str| {
            let pem = format!("{name}.pem");
            let der = format!("{name}.der");
            openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", &pem]);
            openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", &pem, "-outform", "DER", "-out", &der]);
            let modulus = String::from_utf8(openssl(&["rsa", "-in", &pem, "-noout", "-modulus"])).unwrap();
            let hex = modulus.trim().trim_start_matches("Modulus=");
            let n: Vec<u8> =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            let pair = signature::RsaKeyPair::from_pkcs8(&std::fs::read(dir.join(&der)).unwrap()).unwrap();
            (pair, n)
        };
        let (pair, n) = make("a");
        let (other, _) = make("b");
        let jwks = serde_json::json!({ "keys": [{ "kty": "RSA", "kid": "rsa-1", "n": URL_SAFE_NO_PAD.encode(&n),
            "e": URL_SAFE_NO_PAD.encode([1u8, 0, 1]) }] })
        .to_string();
        let keys = parse_jwks("jwks.json", &jwks).unwrap();
        let now = 1_800_000_000;
        let claims = serde_json::json!({ "sub": "idp user", "exp": now + 60 }).to_string();
        let sign = |pair: &signature::RsaKeyPair| {
            let signed = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"rsa-1"}"#),
                URL_SAFE_NO_PAD.encode(&claims)
            );
            let mut sig = vec![0u8; pair.public().modulus_len()];
            pair.sign(&signature::RSA_PKCS1_SHA256, &SystemRandom::new(), signed.as_bytes(), &mut sig).unwrap();
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
        };
        assert_eq!(verify(&sign(&pair), &keys, &Expect::default(), now).unwrap().0.sub, "idp user");
        assert!(verify(&sign(&other), &keys, &Expect::default(), now).unwrap_err().contains("not from a key"));
    }
}
