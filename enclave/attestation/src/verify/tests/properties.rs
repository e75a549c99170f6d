//! Arbitrary and mutated documents never panic and never verify.

use super::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic_verify(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        prop_assert!(AWS.verify(&bytes, doc_time(DOC1), &Expectations::default()).is_err());
    }

    #[test]
    fn mutated_real_documents_never_panic_or_verify(
        which in 0usize..3,
        at in any::<usize>(),
        value in 1u8..=255,
    ) {
        let bytes = [DOC1, DOC2, DOC3][which];
        let mut mutated = bytes.to_vec();
        let at = at % mutated.len();
        mutated[at] ^= value;
        let r = AWS.verify(&mutated, doc_time(bytes), &expect_debug(true));
        prop_assert!(r.is_err(), "byte {} ^ {} verified", at, value);
    }
}
