//! What the replicas write to Redis, sealed: every value is encrypted and
//! authenticated (AES-256-GCM, a random nonce each time) with a key derived
//! from `redis.encryption_key` (HKDF-SHA256), the format byte and the name
//! it is stored under bound as associated data — an entry copied under
//! another name fails to open — and every name is an HMAC of what it
//! stands for (tenant, auth URL, client id, business unit, scope), keyed
//! the same way: such input has little entropy, and a plain hash of it
//! could be reversed by trying.
//! Nothing in Redis reads as a token, a refresh token or a secret.
//!
//! `redis.previous_encryption_key` (during a rotation) still opens what it
//! sealed, under the names it made; nothing new is sealed with it.

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::error::Unspecified;
use aws_lc_rs::{hkdf, hmac};

use crate::config::{RedisSettings, Secret};

/// The first byte of every sealed value: the format, so that a later one
/// can be told apart.
const FORMAT: u8 = 1;

/// HKDF's salt: fixed, as RFC 5869 allows; it separates this use of the
/// key from any other.
const SALT: &[u8] = b"sfmc-proxy redis seal v1";

/// What a value is bound to besides its key: the format byte and the name
/// it is stored under (so neither can be changed without the seal failing).
fn associated(name: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(1 + name.len());
    data.push(FORMAT);
    data.extend_from_slice(name.as_bytes());
    data
}

/// The keys of one `encryption_key`: for values, and for names.
struct Keys {
    values: RandomizedNonceKey,
    names: hmac::Key,
}

impl Keys {
    /// Fails only if aws-lc does (32 bytes of HKDF-SHA256 output are far
    /// under its limit, and AES-256-GCM takes any 32-byte key).
    fn derive(secret: &Secret) -> Result<Self, Unspecified> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret.expose().as_bytes());
        let mut value_key = [0u8; 32];
        let mut name_key = [0u8; 32];
        expand(&prk, b"values", &mut value_key)?;
        expand(&prk, b"names", &mut name_key)?;
        Ok(Self {
            values: RandomizedNonceKey::new(&AES_256_GCM, &value_key)?,
            names: hmac::Key::new(hmac::HMAC_SHA256, &name_key),
        })
    }

    fn name(&self, prefix: &str, kind: &str, parts: &[&str]) -> String {
        format!("{prefix}{kind}:{}", self.tag(kind, parts))
    }

    /// HMAC-SHA256 of (`kind`, `parts`), in hex.
    fn tag(&self, kind: &str, parts: &[&str]) -> String {
        let mut context = hmac::Context::with_key(&self.names);
        for part in std::iter::once(&kind).chain(parts) {
            // Length-prefixed: ("ab", "c") and ("a", "bc") differ.
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part.as_bytes());
        }
        data_encoding::HEXLOWER.encode(context.sign().as_ref())
    }
}

fn expand(prk: &hkdf::Prk, info: &[u8], out: &mut [u8; 32]) -> Result<(), Unspecified> {
    let info = [info];
    prk.expand(&info, hkdf::HKDF_SHA256)?.fill(out)
}

/// Seals and opens values, and names them, for one `[redis]` section.
pub struct Sealer {
    prefix: String,
    current: Keys,
    previous: Option<Keys>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    pub fn new(settings: &RedisSettings) -> Result<Self, Unspecified> {
        let previous = match &settings.previous_encryption_key {
            Some(key) => Some(Keys::derive(key)?),
            None => None,
        };
        Ok(Self {
            prefix: settings.key_prefix.clone(),
            current: Keys::derive(&settings.encryption_key)?,
            previous,
        })
    }

    /// The Redis key of a `kind` of entry (`token`, `lock`, …) for `parts`,
    /// as the current key names it.
    pub fn name(&self, kind: &str, parts: &[&str]) -> String {
        self.current.name(&self.prefix, kind, parts)
    }

    /// A MAC of (`kind`, `parts`) under the current key (hex): what only
    /// the fleet can make, such as a login's `state` or the status page's
    /// form token, checked by any replica without asking Redis.
    pub fn tag(&self, kind: &str, parts: &[&str]) -> String {
        self.current.tag(kind, parts)
    }

    /// Whether `tag` is [`Sealer::tag`]'s for (`kind`, `parts`) under the
    /// current key or the previous one (a rotation), its first `len` hex
    /// characters compared in constant time.
    pub fn verify_tag(&self, kind: &str, parts: &[&str], tag: &str, len: usize) -> bool {
        use subtle::ConstantTimeEq;
        let keys = std::iter::once(&self.current).chain(self.previous.as_ref());
        let matches = |keys: &Keys| {
            let made = keys.tag(kind, parts);
            made.len() >= len
                && tag.len() == len
                && bool::from(made.as_bytes()[..len].ct_eq(tag.as_bytes()))
        };
        keys.into_iter().any(matches)
    }

    /// The same entry as the previous key named it, during a rotation.
    pub fn previous_name(&self, kind: &str, parts: &[&str]) -> Option<String> {
        let previous = self.previous.as_ref()?;
        Some(previous.name(&self.prefix, kind, parts))
    }

    /// The one name not derived from the key: the fleet's canary, which
    /// tells replicas with another `encryption_key` under the same prefix.
    pub fn canary_name(&self) -> String {
        format!("{}canary", self.prefix)
    }

    /// Whether `sealed` was sealed under `name` with the current key (not
    /// only the previous one).
    pub fn opens_with_current(&self, name: &str, sealed: &[u8]) -> bool {
        let Some((&FORMAT, rest)) = sealed.split_first() else {
            return false;
        };
        if rest.len() < NONCE_LEN {
            return false;
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let Ok(nonce) = Nonce::try_assume_unique_for_key(nonce) else {
            return false;
        };
        let mut body = body.to_vec();
        let aad = Aad::from(associated(name));
        self.current
            .values
            .open_in_place(nonce, aad, &mut body)
            .is_ok()
    }

    /// `plaintext` sealed for storing under `name`.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + 16);
        let mut body = plaintext.to_vec();
        let aad = Aad::from(associated(name));
        // Sealing fails only when the system's random source does, and a
        // value that cannot be sealed must not be stored: none is.
        let Ok(nonce) = self.current.values.seal_in_place_append_tag(aad, &mut body) else {
            return Vec::new();
        };
        sealed.push(FORMAT);
        sealed.extend_from_slice(nonce.as_ref());
        sealed.extend_from_slice(&body);
        sealed
    }

    /// What was sealed under `name`, if this is such a value and one of the
    /// keys (current, then previous) opens it; `None` for anything else —
    /// a foreign value, one copied from another name, or tampered with.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        let (&format, rest) = sealed.split_first()?;
        if format != FORMAT || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let keys = std::iter::once(&self.current).chain(self.previous.as_ref());
        keys.into_iter().find_map(|keys| {
            let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
            let mut body = body.to_vec();
            let aad = Aad::from(associated(name));
            let plain = keys.values.open_in_place(nonce, aad, &mut body).ok()?;
            Some(plain.to_vec())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(key: &str, previous: Option<&str>) -> RedisSettings {
        RedisSettings::for_tests(key, previous)
    }

    fn sealer(key: &str, previous: Option<&str>) -> Sealer {
        Sealer::new(&settings(key, previous)).expect("keys")
    }

    const A: &str = "a-key-of-at-least-32-characters!!";
    const B: &str = "another-key-of-32-characters-or-more";

    #[test]
    fn a_sealed_value_opens_under_its_name_only_and_reads_as_nothing() {
        let sealer_a = sealer(A, None);
        let name = sealer_a.name("token", &["acme", "https://x/", "id", "100", ""]);
        assert!(name.starts_with("sfmc-proxy:token:"), "{name}");
        assert_eq!(name.len(), "sfmc-proxy:token:".len() + 64);
        let secret = b"{\"access_token\":\"eyJhbGciOi-real-token\"}";
        let sealed = sealer_a.seal(&name, secret);
        assert_eq!(sealer_a.open(&name, &sealed).as_deref(), Some(&secret[..]));
        let text = String::from_utf8_lossy(&sealed);
        assert!(
            !text.contains("real-token") && !text.contains("access_token"),
            "{text}"
        );
        // Two seals of one value differ (a fresh nonce each time).
        assert_ne!(sealed, sealer_a.seal(&name, secret));

        let other = sealer_a.name("token", &["acme", "https://x/", "id", "200", ""]);
        assert_eq!(
            sealer_a.open(&other, &sealed),
            None,
            "copied under another name"
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(sealer_a.open(&name, &tampered), None);
        assert_eq!(sealer_a.open(&name, b""), None);
        assert_eq!(sealer_a.open(&name, b"plain text"), None);
        assert_eq!(sealer(B, None).open(&name, &sealed), None, "another key");
    }

    #[test]
    fn names_depend_on_key_kind_and_every_part_unambiguously() {
        let a = sealer(A, None);
        let b = sealer(B, None);
        let parts = ["acme", "https://x/", "id", "100", "email_read"];
        assert_eq!(a.name("token", &parts), a.name("token", &parts));
        assert_ne!(a.name("token", &parts), b.name("token", &parts));
        assert_ne!(a.name("token", &parts), a.name("lock", &parts));
        assert_ne!(a.name("token", &["ab", "c"]), a.name("token", &["a", "bc"]));
        assert!(!a.name("token", &parts).contains("acme"));
    }

    #[test]
    fn during_a_rotation_the_previous_key_still_opens_what_it_sealed() {
        let old = sealer(A, None);
        let name = old.name("token", &["acme"]);
        let sealed = old.seal(&name, b"value");
        let rotating = sealer(B, Some(A));
        assert_eq!(
            rotating.previous_name("token", &["acme"]),
            Some(name.clone())
        );
        assert_eq!(
            rotating.open(&name, &sealed).as_deref(),
            Some(&b"value"[..])
        );
        assert_ne!(
            rotating.name("token", &["acme"]),
            name,
            "new names use the new key"
        );
        assert_eq!(sealer(B, None).previous_name("token", &["acme"]), None);
    }

    #[test]
    fn debug_shows_no_key() {
        let shown = format!("{:?}", sealer(A, None));
        assert!(!shown.contains(A), "{shown}");
    }
}
