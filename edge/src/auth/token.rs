//! Verifying a client's JWT (with `jsonwebtoken`): the signature against the configured
//! keys (a shared secret for HS256, or a JWKS whose `kid` picks the key: RS256, ES256,
//! EdDSA), then `exp`, `nbf`, `iat`, `aud` and `iss` with a small clock skew; out comes
//! the connection's [`Identity`]: its subject, when it expires, and its compiled
//! [`Grant`] from the `rl` claim. A token's algorithm must be the one its key is for,
//! so no token can pick a weaker check (`alg: none`, or HS256 signed with a public key).

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use super::grant::{Grant, GrantSpec, PatternError};

/// Why a token is refused. Every one is the client's doing (or its issuer's); none
/// says which key or secret was tried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("no key for this token")]
    UnknownKey,
    #[error("algorithm not allowed for this key")]
    Algorithm,
    #[error("bad signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("wrong audience")]
    Audience,
    #[error("wrong issuer")]
    Issuer,
    #[error("missing claim {0}")]
    Missing(String),
    #[error("bad permission pattern: {0}")]
    Grant(#[from] PatternError),
}

impl TokenError {
    /// A short fixed phrase for the client (401's header, an error's message): never
    /// the token, never a key.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed token",
            Self::UnknownKey => "unknown key",
            Self::Algorithm => "algorithm not allowed",
            Self::Signature => "bad signature",
            Self::Expired => "token expired",
            Self::NotYetValid => "token not valid yet",
            Self::IssuedInFuture => "token issued in the future",
            Self::Audience => "wrong audience",
            Self::Issuer => "wrong issuer",
            Self::Missing(_) => "missing claim",
            Self::Grant(_) => "bad permission pattern",
        }
    }
}

/// Who a verified token says the connection is, and what it may do until when (32
/// bytes, boxed once per connection; the subject lives in the grant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Its `exp` (seconds since the Unix epoch).
    pub expires: u64,
    /// Its permissions, compiled for its subject.
    pub grant: Grant,
}

impl Identity {
    /// The token's `sub`.
    pub fn subject(&self) -> &str {
        self.grant.subject()
    }
}

/// The claims the edge reads.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: String,
    /// Optional here so that its absence is reported as such (the validation requires it).
    exp: Option<u64>,
    iat: Option<u64>,
    #[serde(default, rename = "rl")]
    grant: GrantClaim,
}

/// The `rl` claim: key patterns per kind of access.
#[derive(Debug, Default, Deserialize)]
struct GrantClaim {
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    presence: Vec<String>,
}

/// One key and the one algorithm it verifies.
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// What tokens are checked against.
pub struct Verifier {
    keys: Vec<Key>,
    audience: Option<String>,
    issuer: Option<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
    skew: u64,
}

impl std::fmt::Debug for Verifier {
    /// Keys and secrets are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("skew", &self.skew)
            .finish()
    }
}

/// Why keys cannot be used (a configuration error: the edge does not start).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the shared secret is shorter than 32 bytes")]
    ShortSecret,
    #[error("the JWKS has no usable key (RS256, ES256 on P-256, EdDSA on Ed25519)")]
    NoKeys,
    #[error("JWKS: {0}")]
    Jwks(String),
}

/// The algorithm a JWK is for, from its type (and curve); `None` if the edge does not
/// take it, or its `alg` says otherwise.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    match &jwk.common.key_algorithm {
        Some(said) if said.to_string() != format!("{alg:?}") => None,
        _ => Some(alg),
    }
}

impl Verifier {
    /// HS256 tokens signed with `secret` (at least 32 bytes).
    pub fn with_secret(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < 32 {
            return Err(KeyError::ShortSecret);
        }
        let key = DecodingKey::from_secret(secret).map_err(|e| KeyError::Jwks(e.to_string()))?;
        Ok(Self::new(vec![Key {
            kid: None,
            alg: Algorithm::HS256,
            key,
        }]))
    }

    /// Tokens signed by a key of the JWKS `json` (the token's `kid` picks it).
    pub fn with_jwks(json: &str) -> Result<Self, KeyError> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| KeyError::Jwks(e.to_string()))?;
        let keys: Vec<Key> = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let alg = algorithm_of(jwk)?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some(Key {
                    kid: jwk.common.key_id.clone(),
                    alg,
                    key,
                })
            })
            .collect();
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(Self::new(keys))
    }

    fn new(keys: Vec<Key>) -> Self {
        Self {
            keys,
            audience: None,
            issuer: None,
            skew: 30,
        }
    }

    /// Require this `aud`.
    pub fn audience(mut self, aud: Option<String>) -> Self {
        self.audience = aud;
        self
    }

    /// Require this `iss`.
    pub fn issuer(mut self, iss: Option<String>) -> Self {
        self.issuer = iss;
        self
    }

    /// Allow this much clock skew (seconds).
    pub fn skew(mut self, secs: u64) -> Self {
        self.skew = secs;
        self
    }

    /// The key for a token whose header names `kid` and `alg`.
    fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<&Key, TokenError> {
        let key = match kid {
            // Without a kid, only a verifier with one key knows which to use.
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
        }
        .ok_or(TokenError::UnknownKey)?;
        if key.alg != alg {
            return Err(TokenError::Algorithm);
        }
        Ok(key)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.skew;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        v
    }

    /// Seconds from now that `id` stays valid: to its `exp`, plus the skew its check
    /// allowed (a token let in within the skew is not then closed at once).
    pub fn remaining(&self, id: &Identity) -> u64 {
        id.expires
            .saturating_add(self.skew)
            .saturating_sub(jsonwebtoken::get_current_timestamp())
    }

    /// Verify `token` against the system clock.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let now = jsonwebtoken::get_current_timestamp();
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        let key = self.key_for(header.kid.as_deref(), header.alg)?;
        let data = decode::<Claims>(token, &key.key, &self.validation(key.alg)).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.into_kind() {
                K::InvalidSignature => TokenError::Signature,
                K::ExpiredSignature => TokenError::Expired,
                K::ImmatureSignature => TokenError::NotYetValid,
                K::InvalidAudience => TokenError::Audience,
                K::InvalidIssuer => TokenError::Issuer,
                K::InvalidAlgorithm | K::MissingAlgorithm => TokenError::Algorithm,
                K::MissingRequiredClaim(c) => TokenError::Missing(c),
                _ => TokenError::Malformed,
            }
        })?;
        let c = data.claims;
        if c.iat.is_some_and(|iat| iat > now.saturating_add(self.skew)) {
            return Err(TokenError::IssuedInFuture);
        }
        let spec = GrantSpec {
            read: c.grant.read,
            write: c.grant.write,
            publish: c.grant.publish,
            presence: c.grant.presence,
        };
        let grant = Grant::compile(&spec, &c.sub)?;
        let expires = c.exp.ok_or_else(|| TokenError::Missing("exp".to_owned()))?;
        Ok(Identity { expires, grant })
    }
}

#[cfg(test)]
mod tests;
