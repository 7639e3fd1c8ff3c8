//! The link's mutual authentication: an HMAC-SHA256 challenge–response on a secret that the two
//! realms of a peer pair share (and no other realm knows).
//!
//! The dialer sends a nonce in `hello`; the listener answers with its own nonce and a proof over
//! both; the dialer checks it and sends its own proof; the listener checks that. Each proof binds
//! the role, both realm names and both nonces, so a proof cannot be replayed on another link, in the
//! other direction, or for another pair of realms: a realm that claims a name not its own does not
//! hold that pair's secret and cannot produce the proof.
//!
//! Over TLS each proof also binds the TLS channel ([`Transcript::channel`]: keying material both
//! ends export from their TLS session, RFC 5705). A relay that terminates TLS towards each realm
//! has two different channels, so the proofs it forwards fail: it cannot splice two links.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// Length of a nonce, in bytes (hex-encoded on the wire: 64 characters).
pub const NONCE_LEN: usize = 32;

/// Shortest secret accepted, in bytes: 128 bits.
pub const MIN_SECRET_LEN: usize = 16;

/// Which end of the link a proof comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The realm that opened the connection.
    Dialer,
    /// The realm that accepted it.
    Listener,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Self::Dialer => "dialer",
            Self::Listener => "listener",
        }
    }
}

/// What both proofs are computed over.
#[derive(Debug, Clone, Copy)]
pub struct Transcript<'a> {
    /// The dialer's realm name.
    pub dialer: &'a str,
    /// The listener's realm name.
    pub listener: &'a str,
    /// The dialer's nonce, as sent (hex).
    pub dialer_nonce: &'a str,
    /// The listener's nonce, as sent (hex).
    pub listener_nonce: &'a str,
    /// Over TLS: the keying material both ends export from their TLS session
    /// ([`CHANNEL_LABEL`], no context, [`CHANNEL_LEN`] bytes). `None` on a plaintext link.
    pub channel: Option<&'a [u8]>,
}

/// The RFC 5705 exporter label of the channel binding ([`Transcript::channel`]).
pub const CHANNEL_LABEL: &[u8] = b"EXPORTER-jaring-federation-v1";

/// Bytes of exported keying material the channel binding uses.
pub const CHANNEL_LEN: usize = 32;

impl Transcript<'_> {
    fn mac(&self, secret: &[u8], role: Role) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; new_from_slice cannot fail for it.
        let mut mac = <Hmac<Sha256>>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        // Newline-separated fields: names and hex nonces never contain a newline.
        for part in [
            "jaring-federation-v1",
            role.label(),
            self.dialer,
            self.listener,
            self.dialer_nonce,
            self.listener_nonce,
        ] {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        if let Some(channel) = self.channel {
            // Hex, so the field cannot contain the separator either.
            mac.update(b"tls-exporter:");
            mac.update(hex(channel).as_bytes());
            mac.update(b"\n");
        }
        mac
    }

    /// The proof `role` sends, lowercase hex.
    pub fn proof(&self, secret: &[u8], role: Role) -> String {
        hex(&self.mac(secret, role).finalize().into_bytes())
    }

    /// Whether `proof` (hex) is `role`'s proof; compared in constant time.
    pub fn verify(&self, secret: &[u8], role: Role, proof: &str) -> bool {
        match unhex(proof) {
            Some(bytes) => self.mac(secret, role).verify_slice(&bytes).is_ok(),
            None => false,
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// The bytes of lowercase or uppercase hex, or `None`.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16);
            Some((d(p[0])? * 16 + d(p[1])?) as u8)
        })
        .collect()
}

/// Whether `s` is a well-formed nonce (64 hex characters).
pub fn is_nonce(s: &str) -> bool {
    s.len() == NONCE_LEN * 2 && unhex(s).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t<'a>() -> Transcript<'a> {
        Transcript {
            dialer: "realm1",
            listener: "realm2",
            dialer_nonce: "aa",
            listener_nonce: "bb",
            channel: None,
        }
    }

    #[test]
    fn proofs_bind_secret_role_and_names() {
        let secret = b"0123456789abcdef";
        let p = t().proof(secret, Role::Dialer);
        assert_eq!(p.len(), 64);
        assert!(t().verify(secret, Role::Dialer, &p));
        assert!(!t().verify(secret, Role::Listener, &p), "reflected");
        assert!(!t().verify(b"another secret!!", Role::Dialer, &p));
        let other = Transcript {
            dialer: "realm3",
            ..t()
        };
        assert!(!other.verify(secret, Role::Dialer, &p), "other realm name");
        assert!(!t().verify(secret, Role::Dialer, "zz"));
    }

    #[test]
    fn proofs_bind_the_tls_channel() {
        let secret = b"0123456789abcdef";
        let ours = [7u8; CHANNEL_LEN];
        let bound = Transcript {
            channel: Some(&ours),
            ..t()
        };
        let p = bound.proof(secret, Role::Listener);
        assert!(bound.verify(secret, Role::Listener, &p));
        let relayed = [8u8; CHANNEL_LEN];
        let other = Transcript {
            channel: Some(&relayed),
            ..t()
        };
        assert!(
            !other.verify(secret, Role::Listener, &p),
            "another TLS channel (a relay) fails"
        );
        assert!(
            !t().verify(secret, Role::Listener, &p),
            "a bound proof is no plaintext proof"
        );
        assert!(!bound.verify(secret, Role::Listener, &t().proof(secret, Role::Listener)));
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert_eq!(unhex("000fFF"), Some(vec![0, 15, 255]));
        assert_eq!(unhex("0"), None);
        assert!(!is_nonce("00"));
    }
}
