//! The master secret and the sub-keys derived from it.

use std::fmt;

use base64::{engine::general_purpose, Engine as _};
use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::KeyError;

const SIGN_INFO: &[u8] = b"actix-redis-session v1 cookie signing";
const ENCRYPT_INFO: &[u8] = b"actix-redis-session v1 value encryption";
const SEAL_INFO: &[u8] = b"actix-redis-session v1 cookie sealing";
const BIND_INFO: &[u8] = b"actix-redis-session v1 client binding";

/// The secret that signs session cookies.
///
/// A `Key` holds a master secret of at least 32 bytes. Independent 32-byte sub-keys are
/// derived from it with HKDF-SHA256, one per use: signing cookies (HMAC-SHA256), sealing
/// values at rest ([`encrypt_at_rest`](crate::RedisSessionBuilder::encrypt_at_rest)),
/// sealing whole sessions into cookies ([`CookieStore`](crate::store::CookieStore)) and
/// keying the client binding digests
/// ([`bind_to_user_agent`](crate::RedisSessionBuilder::bind_to_user_agent)). The master
/// secret itself is never used directly.
///
/// Older keys can be attached with [`Key::previous_keys`] so that a secret can be rotated
/// without logging everyone out: cookies signed with an older key are still accepted and are
/// re-signed with the current key on the response.
///
/// `Debug` never prints key material, equality is constant-time, and the bytes are zeroed when
/// the key is dropped.
///
/// # Examples
///
/// ```
/// use actix_redis_session::Key;
///
/// // Development: a random key (sessions do not survive a restart).
/// let key = Key::generate();
///
/// // Production: 32 or more secret bytes, e.g. from `openssl rand -base64 64`.
/// let key = Key::from_bytes(&[7u8; 64]).unwrap();
/// assert!(Key::from_bytes(b"too short").is_err());
/// ```
#[derive(Clone)]
pub struct Key {
    current: SubKeys,
    previous: Vec<SubKeys>,
}

#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct SubKeys {
    sign: [u8; 32],
    encrypt: [u8; 32],
    /// Seals whole sessions into cookies ([`CookieStore`](crate::store::CookieStore)).
    seal: [u8; 32],
    /// Keys the client binding digests ([`bind_to_user_agent`](crate::RedisSessionBuilder::bind_to_user_agent)).
    bind: [u8; 32],
}

impl SubKeys {
    fn derive(master: &[u8]) -> Self {
        let hk = Hkdf::<Sha256>::new(None, master);
        let mut keys = SubKeys {
            sign: [0; 32],
            encrypt: [0; 32],
            seal: [0; 32],
            bind: [0; 32],
        };
        // expand() only fails for outputs longer than 255 * 32 bytes.
        hk.expand(SIGN_INFO, &mut keys.sign)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        hk.expand(ENCRYPT_INFO, &mut keys.encrypt)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        hk.expand(SEAL_INFO, &mut keys.seal)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        hk.expand(BIND_INFO, &mut keys.bind)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        keys
    }

    pub(crate) fn sign(&self) -> &[u8; 32] {
        &self.sign
    }

    pub(crate) fn encrypt(&self) -> &[u8; 32] {
        &self.encrypt
    }

    pub(crate) fn seal(&self) -> &[u8; 32] {
        &self.seal
    }

    pub(crate) fn bind(&self) -> &[u8; 32] {
        &self.bind
    }
}

impl Key {
    /// Shortest master secret accepted, in bytes.
    pub const MIN_LEN: usize = 32;

    /// PBKDF2-HMAC-SHA256 iterations used by [`Key::derive_from_passphrase`]: OWASP's
    /// 2023 recommendation for this function.
    pub const PBKDF2_ITERATIONS: u32 = 600_000;

    /// A new random key from the operating system's CSPRNG.
    ///
    /// Sessions signed with it end when the process ends; use it in development and tests,
    /// and a stable key ([`Key::from_env`]) in production.
    ///
    /// # Panics
    ///
    /// Panics if the operating system cannot provide random bytes, which leaves no safe way
    /// to create session ids either.
    pub fn generate() -> Key {
        let mut master = [0u8; 64];
        getrandom::fill(&mut master).expect("the OS random number generator failed");
        let key = Key::from_master(&master);
        master.zeroize();
        key
    }

    /// A key from a master secret of at least [`Key::MIN_LEN`] (32) bytes.
    ///
    /// The bytes must be random (`openssl rand -base64 64`, a secret manager). Bytes that are
    /// plainly not (all printable ASCII, as a password is, or fewer than 16 distinct values)
    /// are accepted but logged as a warning: a password belongs in
    /// [`Key::derive_from_passphrase`], which stretches it.
    ///
    /// # Errors
    ///
    /// [`KeyError::TooShort`] when fewer than 32 bytes are given.
    pub fn from_bytes(master: &[u8]) -> Result<Key, KeyError> {
        if master.len() < Self::MIN_LEN {
            return Err(KeyError::TooShort {
                len: master.len(),
                min: Self::MIN_LEN,
            });
        }
        if looks_weak(master) {
            tracing::warn!(
                "the session key's bytes do not look random (printable text, or few distinct \
                 values); use random bytes (`openssl rand -base64 64`), or \
                 Key::derive_from_passphrase for a passphrase"
            );
        }
        Ok(Key::from_master(master))
    }

    /// A key from the environment variable `name`, holding at least 32 bytes encoded in
    /// base64 (standard or URL-safe alphabet, padding optional).
    ///
    /// Generate a value with `openssl rand -base64 64`.
    ///
    /// This function's copies of the secret (the string read and the decoded bytes) are
    /// zeroed before it returns; the process environment still holds the variable, where
    /// child processes and `/proc/<pid>/environ` can see it. Read the key once at start-up,
    /// before any thread is spawned, and remove the variable then if that matters
    /// (`std::env::remove_var`), or pass the secret through a file instead.
    ///
    /// # Errors
    ///
    /// [`KeyError::MissingEnv`] when the variable is unset or not UTF-8,
    /// [`KeyError::InvalidBase64`] when it is not base64, and [`KeyError::TooShort`] when it
    /// decodes to fewer than 32 bytes.
    pub fn from_env(name: &str) -> Result<Key, KeyError> {
        let mut value = std::env::var(name).map_err(|_| KeyError::MissingEnv {
            name: name.to_owned(),
        })?;
        let decoded = decode_base64(value.trim());
        value.zeroize();
        let mut bytes = decoded.ok_or_else(|| KeyError::InvalidBase64 {
            name: name.to_owned(),
        })?;
        let key = Key::from_bytes(&bytes);
        bytes.zeroize();
        key
    }

    /// A key stretched from a passphrase with PBKDF2-HMAC-SHA256 and
    /// [`Key::PBKDF2_ITERATIONS`] iterations.
    ///
    /// This is slow on purpose (a few hundred milliseconds): call it once at start-up.
    /// The salt need not be secret but must be fixed for the deployment and unique to it;
    /// at least 16 bytes are required.
    ///
    /// # Errors
    ///
    /// [`KeyError::EmptyPassphrase`] for an empty passphrase, [`KeyError::ShortSalt`] for a
    /// salt shorter than 16 bytes.
    pub fn derive_from_passphrase(
        passphrase: impl AsRef<[u8]>,
        salt: impl AsRef<[u8]>,
    ) -> Result<Key, KeyError> {
        let (passphrase, salt) = (passphrase.as_ref(), salt.as_ref());
        if passphrase.is_empty() {
            return Err(KeyError::EmptyPassphrase);
        }
        if salt.len() < 16 {
            return Err(KeyError::ShortSalt { len: salt.len() });
        }
        let mut master = [0u8; 64];
        pbkdf2::pbkdf2_hmac::<Sha256>(passphrase, salt, Self::PBKDF2_ITERATIONS, &mut master);
        let key = Key::from_master(&master);
        master.zeroize();
        Ok(key)
    }

    /// This key, also accepting cookies signed with `keys` (newest first), after any
    /// previous keys added before: each call adds to the list.
    ///
    /// Rotate a secret by making the new one current and listing the old one here for at
    /// least one idle timeout: cookies signed with an old key keep working and are re-signed
    /// with the current key on the next response. Previous keys of the given keys are ignored.
    ///
    /// # Examples
    ///
    /// ```
    /// use actix_redis_session::Key;
    ///
    /// let oldest = Key::from_bytes(&[1u8; 32]).unwrap();
    /// let old = Key::from_bytes(&[2u8; 32]).unwrap();
    /// let key = Key::from_bytes(&[3u8; 32])
    ///     .unwrap()
    ///     .previous_keys([old])
    ///     .previous_keys([oldest]); // both stay accepted
    /// # let _ = key;
    /// ```
    #[must_use]
    pub fn previous_keys(mut self, keys: impl IntoIterator<Item = Key>) -> Key {
        self.previous.extend(keys.into_iter().map(|k| k.current));
        self
    }

    fn from_master(master: &[u8]) -> Key {
        Key {
            current: SubKeys::derive(master),
            previous: Vec::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn current(&self) -> &SubKeys {
        &self.current
    }

    /// The current sub-keys followed by the previous ones.
    pub(crate) fn all(&self) -> impl Iterator<Item = &SubKeys> {
        std::iter::once(&self.current).chain(&self.previous)
    }
}

impl TryFrom<&[u8]> for Key {
    type Error = KeyError;

    fn try_from(master: &[u8]) -> Result<Key, KeyError> {
        Key::from_bytes(master)
    }
}

impl PartialEq for Key {
    /// Constant-time comparison of the current key (previous keys are not compared).
    fn eq(&self, other: &Key) -> bool {
        let a = self.current.sign.ct_eq(&other.current.sign);
        let b = self.current.encrypt.ct_eq(&other.current.encrypt);
        (a & b).into()
    }
}

impl Eq for Key {}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("current", &"<redacted>")
            .field("previous", &self.previous.len())
            .finish()
    }
}

/// Whether a secret is plainly not random: 32 random bytes are all printable ASCII with
/// probability below 10^-13, and hold fewer than 16 distinct values with less still.
fn looks_weak(master: &[u8]) -> bool {
    let mut seen = [false; 256];
    for &b in master {
        seen[usize::from(b)] = true;
    }
    let distinct = seen.iter().filter(|&&s| s).count();
    distinct < 16 || master.iter().all(|b| (0x20..0x7f).contains(b))
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let trimmed = s.trim_end_matches('=');
    general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_are_a_typed_error() {
        assert!(matches!(
            Key::from_bytes(&[0u8; 31]),
            Err(KeyError::TooShort { len: 31, min: 32 })
        ));
        assert!(Key::from_bytes(&[0u8; 32]).is_ok());
        assert!(Key::try_from(&[0u8; 8][..]).is_err());
    }

    #[test]
    fn same_master_gives_same_key_and_subkeys_differ() {
        let a = Key::from_bytes(&[9u8; 40]).unwrap();
        let b = Key::from_bytes(&[9u8; 40]).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, Key::from_bytes(&[8u8; 40]).unwrap());
        assert_ne!(a.current().sign(), a.current().encrypt());
        assert_ne!(&a.current().sign()[..], &[9u8; 32][..]);
    }

    #[test]
    fn secrets_that_are_plainly_not_random_are_told_apart() {
        assert!(looks_weak(b"hunter2hunter2hunter2hunter2hunter2"));
        assert!(looks_weak(b"correct horse battery staple, really long"));
        assert!(looks_weak(&[7u8; 64]));
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).unwrap();
        assert!(!looks_weak(&random));
        assert!(!looks_weak(&(0u8..32).collect::<Vec<_>>()));
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(Key::generate(), Key::generate());
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Computed apart from this crate (Python's hmac and hashlib): a change of the derivation
    /// would invalidate every cookie and every sealed value, so it must fail here first.
    #[test]
    fn sub_keys_match_known_answers() {
        let master: Vec<u8> = (0u8..32).collect();
        let key = Key::from_bytes(&master).unwrap();
        assert_eq!(
            hex(key.current().sign()),
            "40deba481f9843fece3a345b21a300bb895da380a33799fccf65972f09e093d2"
        );
        assert_eq!(
            hex(key.current().encrypt()),
            "b3d203131705cc3e77add7fd8dcd8198887eb50ed4d44c611563bee5d0b59f56"
        );
        assert_eq!(
            hex(key.current().seal()),
            "c8e569f09ee5a6ec1fff351560fb754a037bbc6b4d7156138543b32593864dac"
        );
        // HKDF-SHA256(salt = none, info = "actix-redis-session v1 client binding"), as
        // Python's hmac module computes it.
        assert_eq!(
            hex(key.current().bind()),
            "24fdba4c884232094eebf8b2c1eccc3ac301ebafe69ff2c3f5c858a1f6cbe6e3"
        );
    }

    #[test]
    fn passphrase_derivation_matches_a_known_answer() {
        let key = Key::derive_from_passphrase("correct horse battery staple", "0123456789abcdef")
            .unwrap();
        // PBKDF2-HMAC-SHA256, 600,000 iterations, 64 bytes, then the signing sub-key of that.
        assert_eq!(
            hex(key.current().sign()),
            "e8355ebbb7554e6df505929152649eb07c2520d81f129bed19f0993fa0389e6d"
        );
    }

    #[test]
    fn debug_shows_no_key_material_in_any_form() {
        let master: Vec<u8> = (0u8..32).collect();
        let key = Key::from_bytes(&master)
            .unwrap()
            .previous_keys([Key::from_bytes(&[7u8; 32]).unwrap()]);
        let shown = format!("{key:?} {key:#?}");
        assert!(
            shown.contains("redacted") && shown.contains("previous: 1"),
            "{shown}"
        );
        let sign = key.current().sign();
        let forms = [
            hex(&master),
            hex(sign),
            hex(&sign[..4]),
            format!("{:?}", &sign[..4]),
            format!("{:?}", &master[..4]),
            general_purpose::STANDARD.encode(&master[..6]),
            general_purpose::STANDARD.encode(&sign[..6]),
        ];
        for form in &forms {
            assert!(!shown.contains(form.as_str()), "{form} in {shown}");
        }
        // Nothing but the field names and counts.
        assert!(
            !shown.chars().any(|c| c.is_ascii_digit() && c != '1'),
            "{shown}"
        );
    }

    #[test]
    fn from_env_accepts_both_base64_alphabets() {
        let raw = [0xfbu8; 48];
        std::env::set_var("ARS_TEST_KEY_STD", general_purpose::STANDARD.encode(raw));
        std::env::set_var(
            "ARS_TEST_KEY_URL",
            general_purpose::URL_SAFE_NO_PAD.encode(raw),
        );
        let expected = Key::from_bytes(&raw).unwrap();
        assert_eq!(Key::from_env("ARS_TEST_KEY_STD").unwrap(), expected);
        assert_eq!(Key::from_env("ARS_TEST_KEY_URL").unwrap(), expected);

        std::env::set_var("ARS_TEST_KEY_BAD", "not base64 !!");
        assert!(matches!(
            Key::from_env("ARS_TEST_KEY_BAD"),
            Err(KeyError::InvalidBase64 { .. })
        ));
        std::env::set_var(
            "ARS_TEST_KEY_SHORT",
            general_purpose::STANDARD.encode([1u8; 16]),
        );
        assert!(matches!(
            Key::from_env("ARS_TEST_KEY_SHORT"),
            Err(KeyError::TooShort { len: 16, .. })
        ));
        assert!(matches!(
            Key::from_env("ARS_TEST_KEY_UNSET_12345"),
            Err(KeyError::MissingEnv { .. })
        ));
    }

    #[test]
    fn passphrase_derivation_is_deterministic_and_checked() {
        let a = Key::derive_from_passphrase("correct horse", "0123456789abcdef").unwrap();
        let b = Key::derive_from_passphrase("correct horse", "0123456789abcdef").unwrap();
        assert_eq!(a, b);
        assert!(matches!(
            Key::derive_from_passphrase("", "0123456789abcdef"),
            Err(KeyError::EmptyPassphrase)
        ));
        assert!(matches!(
            Key::derive_from_passphrase("x", "short"),
            Err(KeyError::ShortSalt { len: 5 })
        ));
    }

    #[test]
    fn previous_keys_follow_the_current_one_and_each_call_adds() {
        let oldest = Key::from_bytes(&[1u8; 32]).unwrap();
        let old = Key::from_bytes(&[2u8; 32]).unwrap();
        let key = Key::from_bytes(&[3u8; 32])
            .unwrap()
            .previous_keys([old.clone()])
            .previous_keys([oldest.clone()]);
        let all: Vec<_> = key.all().map(|k| *k.sign()).collect();
        assert_eq!(
            all,
            vec![
                *key.current().sign(),
                *old.current().sign(),
                *oldest.current().sign()
            ]
        );
    }
}
