//! API key secrets: how they are made, shown and hashed. Only the hash is ever stored.
//!
//! A secret is `odo_` and 40 base62 characters (about 238 random bits), so a fast hash
//! (SHA-256) is enough: there is nothing to brute-force that a slow password hash would
//! protect better, and lookups by hash stay one index probe.

use rand::Rng;
use sha2::{Digest, Sha256};

use odometer_core::{ApiKeyId, OrganizationId};

use crate::catalog::{ApiKey, NewApiKey};

/// Every secret starts with this, so leaked keys are easy to recognise and scan for.
pub const SECRET_PREFIX: &str = "odo_";
const SECRET_CHARS: usize = 40;
const SHOWN_PREFIX_CHARS: usize = 8;
const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// SHA-256 of a secret, lowercase hex: what catalogs store and look keys up by.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh random secret.
pub fn generate_secret() -> String {
    let mut rng = rand::rng();
    let body: String = (0..SECRET_CHARS)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    format!("{SECRET_PREFIX}{body}")
}

/// A new key for `org`: the record to store, and the secret to show once.
pub fn new_api_key(org: OrganizationId, name: &str) -> (NewApiKey, String) {
    let secret = generate_secret();
    let key = ApiKey {
        id: ApiKeyId::new(),
        organization_id: org,
        name: name.to_owned(),
        prefix: secret.chars().take(SECRET_PREFIX.len() + SHOWN_PREFIX_CHARS).collect(),
        created_at: odometer_core::time::now(),
        revoked_at: None,
        last_used_at: None,
    };
    (NewApiKey { key, secret_hash: hash_secret(&secret) }, secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_prefixed_and_hash_deterministically() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX));
        assert_eq!(a.len(), SECRET_PREFIX.len() + SECRET_CHARS);
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_ne!(hash_secret(&a), hash_secret(&b));
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_record_keeps_a_short_prefix_and_never_the_secret() {
        let (new, secret) = new_api_key(OrganizationId::new(), "ci");
        assert_eq!(new.key.prefix.len(), 12);
        assert!(secret.starts_with(&new.key.prefix));
        assert_ne!(new.secret_hash, secret);
        assert_eq!(new.secret_hash, hash_secret(&secret));
    }
}
