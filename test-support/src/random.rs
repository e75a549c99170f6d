//! Random test data and credentials.

use rand::Rng;

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill(&mut v[..]);
    v
}

fn random_from(alphabet: &[u8], n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

pub fn random_alnum(n: usize) -> String {
    random_from(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", n)
}

/// An access key id and its secret.
#[derive(Clone, Debug)]
pub struct Creds {
    pub access_key_id: String,
    pub secret: String,
}

impl Creds {
    /// `AKIA` + 16 upper-case alphanumerics, and a 40-character secret.
    pub fn random() -> Self {
        Self {
            access_key_id: format!("AKIA{}", random_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)),
            secret: random_from(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/+", 40),
        }
    }
}
