//! Password hashing (argon2id, OWASP parameters, off the async runtime and
//! bounded) and the password policy.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordVerifier, Version};
use tokio::sync::Semaphore;

use crate::error::{AuthError, Result};

/// argon2id memory cost in KiB (19 MiB, OWASP).
pub const ARGON2_M_KIB: u32 = 19_456;
/// argon2id iterations (OWASP).
pub const ARGON2_T: u32 = 2;
/// argon2id lanes (OWASP).
pub const ARGON2_P: u32 = 1;
/// The shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest password accepted, in characters.
pub const MAX_PASSWORD_CHARS: usize = 128;
/// Usernames at least this long may not appear inside a password.
pub const MIN_USERNAME_CHARS_FOR_CONTAINMENT: usize = 3;
/// The lowest zxcvbn score accepted (0..=4).
pub const MIN_ZXCVBN_SCORE: u8 = 2;

fn argon2() -> Result<Argon2<'static>> {
    let params =
        Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None).map_err(|e| AuthError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes and verifies passwords on the blocking pool, at most
/// `max_concurrent` at a time, so a burst of logins cannot exhaust memory.
#[derive(Clone, Debug)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    /// Verifications run (started) since this hasher was made.
    verifications: Arc<AtomicU64>,
}

impl PasswordHasher {
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            verifications: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The PHC string of `password` under argon2id with a random salt.
    pub async fn hash(&self, password: &str) -> Result<String> {
        let password = password.to_owned();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| AuthError::Hash(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            use argon2::PasswordHasher as _;
            argon2()?
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|e| AuthError::Hash(e.to_string()))
        })
        .await?
    }

    /// How many verifications ran since this hasher was made.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Whether `password` matches the PHC string `hash`. A malformed stored
    /// hash is an internal error, not a mismatch.
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool> {
        let password = password.to_owned();
        let hash = hash.to_owned();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| AuthError::Hash(e.to_string()))?;
        self.verifications.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash).map_err(|e| AuthError::Hash(e.to_string()))?;
            match argon2()?.verify_password(password.as_bytes(), &parsed) {
                Ok(()) => Ok(true),
                Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
                Err(e) => Err(AuthError::Hash(e.to_string())),
            }
        })
        .await?
    }
}

/// Checks a new password: 8 to 128 characters, no composition rules, not
/// the username and not containing it, and a zxcvbn score of at least 2.
/// The error says why a password is refused.
pub fn check_password_policy(username: &str, password: &str) -> Result<()> {
    let refuse = |why: String| Err(AuthError::WeakPassword(why));
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return refuse(format!(
            "it has {chars} characters; use at least {MIN_PASSWORD_CHARS}"
        ));
    }
    if chars > MAX_PASSWORD_CHARS {
        return refuse(format!(
            "it has {chars} characters; use at most {MAX_PASSWORD_CHARS}"
        ));
    }
    let name = username.trim().to_lowercase();
    let lowered = password.to_lowercase();
    if !name.is_empty() && lowered == name {
        return refuse("it is the username".into());
    }
    // Containment only for names long enough to matter: a one-letter name
    // would otherwise refuse most passwords.
    if name.chars().count() >= MIN_USERNAME_CHARS_FOR_CONTAINMENT && lowered.contains(&name) {
        return refuse("it contains the username".into());
    }
    let estimate = zxcvbn::zxcvbn(password, &[username]);
    let score = u8::from(estimate.score());
    if score < MIN_ZXCVBN_SCORE {
        let reason = estimate
            .feedback()
            .and_then(|f| f.warning())
            .map(|w| w.to_string())
            .unwrap_or_else(|| "it is too easy to guess".into());
        return refuse(format!(
            "{reason} (strength {score} of 4, at least {MIN_ZXCVBN_SCORE} needed); a longer passphrase of unrelated words works"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_short_and_long_passwords_counting_characters() {
        let err = check_password_policy("alice", "x7$Qz!").unwrap_err().to_string();
        assert!(err.contains("at least 8"), "{err}");
        // 8 characters but 16 bytes: accepted on length (and strong enough).
        check_password_policy("alice", "ñçøæßðþł").unwrap();
        let long = "correct horse battery staple ".repeat(5);
        assert!(long.chars().count() > 128);
        let err = check_password_policy("alice", &long).unwrap_err().to_string();
        assert!(err.contains("at most 128"), "{err}");
        // 64 characters are allowed.
        check_password_policy("alice", &"tumble weed orbit lantern ".repeat(3)[..64]).unwrap();
    }

    #[test]
    fn refuses_common_and_guessable_passwords_saying_why() {
        for weak in ["password", "password1", "12345678", "qwertyuiop", "iloveyou"] {
            let err = check_password_policy("alice", weak).unwrap_err().to_string();
            assert!(err.contains("strength"), "{weak}: {err}");
        }
    }

    #[test]
    fn refuses_the_username_inside_the_password() {
        let err = check_password_policy("margarethe", "MARGARETHE-2024!xq")
            .unwrap_err()
            .to_string();
        assert!(err.contains("contains the username"), "{err}");
        let err = check_password_policy("Tr0ub4dor&3x", "tr0ub4dor&3x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is the username"), "{err}");
        // A one-letter name does not forbid its letter.
        check_password_policy("a", "purple monkey dishwasher lamp").unwrap();
    }

    #[test]
    fn accepts_passphrases_without_composition_rules() {
        check_password_policy("alice", "purple monkey dishwasher lamp").unwrap();
        check_password_policy("bob", "vq8kz3mwp1").unwrap();
    }

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify() {
        let hasher = PasswordHasher::new(2);
        let a = hasher.hash("purple monkey dishwasher").await.unwrap();
        let b = hasher.hash("purple monkey dishwasher").await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "salts must differ");
        assert!(hasher.verify("purple monkey dishwasher", &a).await.unwrap());
        assert!(!hasher.verify("purple monkey dishwasheR", &a).await.unwrap());
        assert!(matches!(
            hasher.verify("x", "not a hash").await,
            Err(AuthError::Hash(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_hashes_are_bounded_by_the_semaphore() {
        let hasher = PasswordHasher::new(1);
        let permit = hasher.permits.clone().acquire_owned().await.unwrap();
        let pending = tokio::spawn({
            let hasher = hasher.clone();
            async move { hasher.hash("purple monkey dishwasher").await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!pending.is_finished(), "a hash ran without a permit");
        drop(permit);
        assert!(pending.await.unwrap().is_ok());
    }
}
