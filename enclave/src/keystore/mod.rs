//! The keystore domain (being filled).
