//! The cluster mesh's proof of membership: who may hold a link. Members share a
//! secret; a link proves both ends know it without either sending it.
//!
//! ```text
//! edge  → store   Hello { nonce: Ne }                      (Ne: 32 fresh random bytes)
//! store → edge    AuthChallenge { nonce: Ns, proof: Ps }   Ps = HMAC(secret, "…store" ‖ Ne ‖ Ns)
//! edge  → store   AuthProof { proof: Pe }                  Pe = HMAC(secret, "…edge" ‖ Ne ‖ Ns)
//! store → edge    HelloAck                                 (only now are requests served)
//! ```
//!
//! HMAC-SHA256 keyed with the secret: a recording of a link shows nonces and MACs,
//! never the secret. The store's fresh `Ns` makes a recorded `Pe` worthless on any
//! other link (a replayed handshake fails), and the edge's fresh `Ne` does the same
//! for a recorded `Ps` (a process replaying a store's answers is not taken for one).
//! The two proofs are domain-separated, so neither side's MAC serves as the other's.
//! Proofs are compared in constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Bytes of a nonce, and of a proof.
pub const NONCE_LEN: usize = 32;
/// Bytes of a proof (an HMAC-SHA256 tag).
pub const PROOF_LEN: usize = 32;
/// Fewest bytes a cluster secret may have.
pub const MIN_SECRET_LEN: usize = 32;

/// One side's nonce for one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nonce(pub [u8; NONCE_LEN]);

impl Nonce {
    /// The nonce in a received field, if it has the right length.
    #[must_use]
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.try_into().ok().map(Self)
    }
}

/// A proof of knowing the secret, over both nonces of one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof(pub [u8; PROOF_LEN]);

/// Which end of a link a proof is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The store (in `AuthChallenge`).
    Store,
    /// The edge (in `AuthProof`).
    Edge,
}

impl Side {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Store => b"ringline link v1: store",
            Self::Edge => b"ringline link v1: edge",
        }
    }
}

/// The cluster's shared secret. Its bytes are never shown (`Debug` prints its length
/// only).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(Vec<u8>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterSecret({} bytes, redacted)", self.0.len())
    }
}

/// A cluster secret file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Fewer than [`MIN_SECRET_LEN`] bytes (after trailing whitespace).
    #[error(
        "the cluster secret has {0} bytes; it needs at least {MIN_SECRET_LEN} (e.g. head -c 32 /dev/urandom | base64)"
    )]
    TooShort(usize),
}

impl ClusterSecret {
    /// The secret in a file's bytes: trailing whitespace (a final newline) is not part
    /// of it; at least [`MIN_SECRET_LEN`] bytes must remain.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        let secret = &bytes[..end];
        if secret.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort(secret.len()));
        }
        Ok(Self(secret.to_vec()))
    }

    fn mac(&self, side: Side, edge: &Nonce, store: &Nonce) -> Hmac<Sha256> {
        // Any key length is valid for HMAC.
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        m.update(side.label());
        m.update(&edge.0);
        m.update(&store.0);
        m
    }

    /// `side`'s proof for the link whose nonces are `edge` and `store`.
    #[must_use]
    pub fn prove(&self, side: Side, edge: &Nonce, store: &Nonce) -> Proof {
        Proof(self.mac(side, edge, store).finalize().into_bytes().into())
    }

    /// Whether `proof` (as received: any length) is `side`'s for these nonces;
    /// compared in constant time.
    #[must_use]
    pub fn verify(&self, side: Side, edge: &Nonce, store: &Nonce, proof: &[u8]) -> bool {
        self.mac(side, edge, store).verify_slice(proof).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(b: u8) -> ClusterSecret {
        ClusterSecret::from_file_bytes(&[b; 40]).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn each_side_verifies_the_others_proof_and_nothing_else() {
        let (s, other) = (secret(1), secret(2));
        let (ne, ns) = (Nonce([7; 32]), Nonce([9; 32]));
        let pe = s.prove(Side::Edge, &ne, &ns);
        let ps = s.prove(Side::Store, &ne, &ns);
        assert!(s.verify(Side::Edge, &ne, &ns, &pe.0));
        assert!(s.verify(Side::Store, &ne, &ns, &ps.0));
        // Another secret, the other side's label, other nonces, a cut proof: refused.
        assert!(!other.verify(Side::Edge, &ne, &ns, &pe.0));
        assert!(!s.verify(Side::Store, &ne, &ns, &pe.0));
        assert!(!s.verify(Side::Edge, &ne, &Nonce([8; 32]), &pe.0));
        assert!(!s.verify(Side::Edge, &Nonce([8; 32]), &ns, &pe.0));
        assert!(!s.verify(Side::Edge, &ne, &ns, &pe.0[..31]));
        assert!(!s.verify(Side::Edge, &ne, &ns, &[]));
    }

    /// The MAC is HMAC-SHA256 of label ‖ edge nonce ‖ store nonce, as openssl computes
    /// it (the expected value came from the commands below).
    #[test]
    fn the_proof_is_hmac_sha256_of_label_and_nonces() {
        let s = ClusterSecret::from_file_bytes(b"0123456789abcdef0123456789abcdef\n")
            .unwrap_or_else(|_| unreachable!());
        let p = s.prove(Side::Edge, &Nonce([0xaa; 32]), &Nonce([0xbb; 32]));
        // printf 'ringline link v1: edge' > m; head -c 32 < /dev/zero | tr '\0' '\252' >> m;
        // head -c 32 < /dev/zero | tr '\0' '\273' >> m;
        // openssl dgst -sha256 -mac HMAC -macopt key:0123456789abcdef0123456789abcdef m
        let hex: String = p.0.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, EXPECTED_EDGE_PROOF);
    }

    const EXPECTED_EDGE_PROOF: &str =
        "53ef0fed3ebd9c9b373903b88a47c64798dc462ab60e035fd8a20eb8e2acde6d";

    #[test]
    fn a_short_secret_is_refused_and_a_final_newline_is_not_part_of_it() {
        assert_eq!(
            ClusterSecret::from_file_bytes(b"short\n"),
            Err(SecretError::TooShort(5))
        );
        let a = ClusterSecret::from_file_bytes(&[b'x'; 32]);
        let b = ClusterSecret::from_file_bytes(b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n");
        assert_eq!(a, b);
        assert!(format!("{a:?}").contains("redacted"));
        assert!(!format!("{a:?}").contains("xxxx"));
    }
}
