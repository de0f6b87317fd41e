//! Access tokens (JWT, HS256) and TURN credentials (coturn's REST scheme).
//!
//! Time is an argument: expiry is checked against the `now_unix` the caller
//! passes, never against the system clock, so the room core stays testable.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use parley_proto::{AccessClaims, ErrorCode, IceServer, limits};

/// Accepted clock difference between whoever minted a token and this server.
pub const CLOCK_SKEW_LEEWAY_SECS: u64 = 30;
/// Shortest secret accepted: HS256 with less is guessable.
pub const MIN_SECRET_BYTES: usize = 16;

/// Signs and verifies access tokens with one shared secret.
pub struct TokenAuthority {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenAuthority { .. }")
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct TokenRejected {
    pub code: ErrorCode,
    pub message: String,
}

impl TokenAuthority {
    pub fn new(secret: &[u8]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            secret.len() >= MIN_SECRET_BYTES,
            "the auth secret must be at least {MIN_SECRET_BYTES} bytes"
        );
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked against the caller's clock in `verify`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        // Tokens are for this server only; an `aud` claim from the minting
        // service is accepted, not required.
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        })
    }

    pub fn mint(&self, claims: &AccessClaims) -> anyhow::Result<String> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.encoding,
        )?)
    }

    /// Verifies signature, expiry, not-before and room.
    pub fn verify(
        &self,
        token: &str,
        room: &str,
        now_unix: u64,
    ) -> Result<AccessClaims, TokenRejected> {
        let reject = |code, message: &str| TokenRejected {
            code,
            message: message.to_owned(),
        };
        if token.len() > limits::MAX_TOKEN_BYTES {
            return Err(reject(ErrorCode::TokenInvalid, "token is too long"));
        }
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map_err(|err| match err.kind() {
                ErrorKind::InvalidSignature => {
                    reject(ErrorCode::TokenInvalid, "token signature is not valid")
                }
                ErrorKind::InvalidAlgorithm => {
                    reject(ErrorCode::TokenInvalid, "token must be signed with HS256")
                }
                ErrorKind::Json(_) | ErrorKind::MissingRequiredClaim(_) => reject(
                    ErrorCode::TokenInvalid,
                    "token claims are missing or malformed",
                ),
                _ => reject(ErrorCode::TokenInvalid, "token is not a valid JWT"),
            })?
            .claims;
        if now_unix > claims.exp.saturating_add(CLOCK_SKEW_LEEWAY_SECS) {
            return Err(reject(ErrorCode::TokenExpired, "token has expired"));
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now_unix.saturating_add(CLOCK_SKEW_LEEWAY_SECS))
        {
            return Err(reject(ErrorCode::TokenExpired, "token is not valid yet"));
        }
        if claims.room != room {
            return Err(reject(
                ErrorCode::TokenWrongRoom,
                "token is for another room",
            ));
        }
        Ok(claims)
    }
}

/// TURN servers that share a secret with this SFU (coturn `use-auth-secret`).
#[derive(Clone)]
pub struct TurnCredentials {
    secret: Vec<u8>,
    urls: Vec<String>,
    ttl_secs: u64,
}

impl std::fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnCredentials")
            .field("urls", &self.urls)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl TurnCredentials {
    pub fn new(secret: Vec<u8>, urls: Vec<String>, ttl_secs: u64) -> Self {
        Self {
            secret,
            urls,
            ttl_secs,
        }
    }

    /// Username `expiry:user`, password `base64(HMAC-SHA1(secret, username))`.
    /// `user` is the participant id rather than the identity, so TURN server
    /// logs do not collect people's identities (often e-mail addresses).
    pub fn mint(&self, user: &str, now_unix: u64) -> IceServer {
        let username = format!("{}:{user}", now_unix.saturating_add(self.ttl_secs));
        let mut mac =
            Hmac::<sha1::Sha1>::new_from_slice(&self.secret).expect("HMAC accepts any key length");
        mac.update(username.as_bytes());
        let credential =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        IceServer {
            urls: self.urls.clone(),
            username: Some(username),
            credential: Some(credential),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parley_proto::Grants;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn claims(room: &str, exp: u64) -> AccessClaims {
        AccessClaims {
            sub: "ada".into(),
            room: room.into(),
            name: Some("Ada".into()),
            grants: Grants {
                publish: false,
                ..Grants::ALL
            },
            iat: NOW,
            exp,
            nbf: None,
        }
    }

    #[test]
    fn minted_token_verifies() {
        let auth = TokenAuthority::new(SECRET).unwrap();
        let token = auth.mint(&claims("standup", NOW + 60)).unwrap();
        let verified = auth.verify(&token, "standup", NOW).unwrap();
        assert_eq!(verified, claims("standup", NOW + 60));
    }

    #[test]
    fn refusals_have_distinct_codes() {
        let auth = TokenAuthority::new(SECRET).unwrap();
        let expired = auth.mint(&claims("standup", NOW - 3600)).unwrap();
        assert_eq!(
            auth.verify(&expired, "standup", NOW).unwrap_err().code,
            ErrorCode::TokenExpired
        );
        let other_room = auth.mint(&claims("other", NOW + 60)).unwrap();
        assert_eq!(
            auth.verify(&other_room, "standup", NOW).unwrap_err().code,
            ErrorCode::TokenWrongRoom
        );
        let forged = TokenAuthority::new(b"another-secret-of-enough-length")
            .unwrap()
            .mint(&claims("standup", NOW + 60))
            .unwrap();
        assert_eq!(
            auth.verify(&forged, "standup", NOW).unwrap_err().code,
            ErrorCode::TokenInvalid
        );
        for garbage in ["", "abc", "a.b.c", &"x".repeat(limits::MAX_TOKEN_BYTES + 1)] {
            assert_eq!(
                auth.verify(garbage, "standup", NOW).unwrap_err().code,
                ErrorCode::TokenInvalid
            );
        }
    }

    #[test]
    fn expiry_allows_small_clock_skew() {
        let auth = TokenAuthority::new(SECRET).unwrap();
        let token = auth.mint(&claims("r", NOW)).unwrap();
        assert!(
            auth.verify(&token, "r", NOW + CLOCK_SKEW_LEEWAY_SECS)
                .is_ok()
        );
        assert!(
            auth.verify(&token, "r", NOW + CLOCK_SKEW_LEEWAY_SECS + 1)
                .is_err()
        );
    }

    #[test]
    fn audience_claims_are_accepted() {
        #[derive(serde::Serialize)]
        struct WithAudience {
            #[serde(flatten)]
            claims: AccessClaims,
            aud: &'static str,
        }
        let auth = TokenAuthority::new(SECRET).unwrap();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &WithAudience {
                claims: claims("r", NOW + 60),
                aud: "parley",
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(auth.verify(&token, "r", NOW).is_ok());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(TokenAuthority::new(b"short").is_err());
    }

    #[test]
    fn turn_credentials_follow_coturn_rest_scheme() {
        let turn = TurnCredentials::new(
            b"turn-secret".to_vec(),
            vec!["turns:turn.example.com:443?transport=tcp".into()],
            3600,
        );
        let server = turn.mint("ada", 1_000);
        assert_eq!(server.username.as_deref(), Some("4600:ada"));
        // Reference value: printf '4600:ada' | openssl dgst -sha1 -hmac turn-secret -binary | base64
        assert_eq!(
            server.credential.as_deref(),
            Some("9fkbKNZqU4qV2+sa5IVhJTonIiE=")
        );
    }
}
