//! Certificate chains: forged intermediates and the structural rules, on a synthetic PKI.

use super::*;

// ----- forged chains -----

#[test]
fn forged_intermediates_are_refused() {
    let now = doc_time(DOC1);
    let expect = Expectations::default();
    let real = decoded(DOC1);
    let instance = Certificate::from_der(&real.cabundle[3]).expect("instance CA");

    // The leaf's issuer replaced by a CA of the same name under another key.
    let impostor_key = key(11);
    let mut impostor = instance.clone();
    impostor.tbs_certificate.subject_public_key_info = spki(&impostor_key);
    let impostor = resign(impostor, &impostor_key);
    let forged = edited(DOC1, |d| d.cabundle[3] = impostor.clone());
    assert!(chain_error(AWS.verify(&forged, now, &expect)));

    // An intermediate from another real chain.
    let other = decoded(DOC2);
    let forged = edited(DOC1, |d| d.cabundle[3] = other.cabundle[3].clone());
    assert!(chain_error(AWS.verify(&forged, now, &expect)));
    let forged = edited(DOC1, |d| d.cabundle[1] = other.cabundle[1].clone());
    assert!(chain_error(AWS.verify(&forged, now, &expect)));

    // A leaf from another chain under this chain's CAs.
    let forged = edited(DOC1, |d| d.certificate = other.certificate.clone());
    assert!(chain_error(AWS.verify(&forged, now, &expect)));

    // A root of the same name as AWS's in cabundle[0]: the real regional CA is not its child.
    let fake_root_key = key(12);
    let mut fake_root = Certificate::from_der(&real.cabundle[0]).expect("root");
    fake_root.tbs_certificate.subject_public_key_info = spki(&fake_root_key);
    let fake_root = resign(fake_root, &fake_root_key);
    let forged = edited(DOC1, |d| d.cabundle[0] = fake_root.clone());
    assert!(chain_error(AWS.verify(&forged, now, &expect)));

    // A whole forged chain under a fake root of AWS's name.
    let (i_key, l_key) = (key(13), key(14));
    let aws_name = "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US";
    let fake_root = der_of(&issue(Profile::Root, aws_name, spki(&fake_root_key), &fake_root_key));
    let fake_inter = der_of(&issue(sub_ca(aws_name, None), INTER, spki(&i_key), &fake_root_key));
    let fake_leaf = der_of(&issue(leaf_profile(INTER), LEAF, spki(&l_key), &i_key));
    let mut doc = synthetic(fake_leaf.clone(), vec![fake_root.clone(), fake_inter.clone()]);
    doc.timestamp_ms = real.timestamp_ms;
    let forged = sign_with(&l_key, &doc);
    let r = AWS.verify(&forged, now, &expect);
    assert!(
        chain_error(r.clone()) || r == Err(AttestationError::UntrustedRoot),
        "{r:?}"
    );
    doc.cabundle = vec![fake_inter];
    assert_eq!(
        AWS.verify(&sign_with(&l_key, &doc), now, &expect),
        Err(AttestationError::UntrustedRoot)
    );
    doc.cabundle = vec![TrustAnchor::aws_nitro_root().expect("root").der().to_vec()];
    assert!(AWS.verify(&sign_with(&l_key, &doc), now, &expect).is_err());
}

#[test]
fn cabundle_without_the_root_is_accepted() {
    // The chain still ends at the anchor; only the signature fails because the payload changed.
    let forged = edited(DOC1, |d| {
        d.cabundle.remove(0);
    });
    assert_eq!(
        AWS.verify(&forged, doc_time(DOC1), &Expectations::default()),
        Err(AttestationError::BadSignature)
    );
    // The same with a synthetic PKI verifies fully.
    let pki = Pki::new();
    let doc = AttestationDocument {
        cabundle: vec![pki.inter.clone()],
        ..pki.doc()
    };
    assert!(
        pki.verifier()
            .verify(&pki.sign(&doc), ts(), &Expectations::default())
            .is_ok()
    );
}

// ----- structural chain rules on a synthetic PKI -----

#[test]
fn synthetic_pki_verifies() {
    let pki = Pki::new();
    let verifier = pki.verifier();
    let v = verifier
        .verify(&pki.sign(&pki.doc()), ts(), &Expectations::default())
        .expect("verifies");
    assert_eq!(v.nonce(), Some(&b"nonce"[..]));
    // Signed by a key other than the leaf's.
    assert_eq!(
        verifier.verify(&sign_with(&pki.inter_key, &pki.doc()), ts(), &Expectations::default()),
        Err(AttestationError::BadSignature)
    );
    // A leaf directly under the root.
    let leaf = der_of(&issue(leaf_profile(ROOT), LEAF, spki(&pki.leaf_key), &pki.root_key));
    let doc = synthetic(leaf, vec![pki.root.clone()]);
    assert!(verifier.verify(&pki.sign(&doc), ts(), &Expectations::default()).is_ok());
    // The AWS verifier does not trust it.
    assert_eq!(
        AWS.verify(&pki.sign(&pki.doc()), ts(), &Expectations::default()),
        Err(AttestationError::UntrustedRoot)
    );
}

#[test]
fn path_length_is_enforced() {
    let pki = Pki::new();
    let ca2_key = key(20);
    // root → INTER (pathlen 0) → CA2 → leaf: INTER's pathlen is exceeded.
    let ca2 = der_of(&issue(sub_ca(INTER, None), "CN=CA2", spki(&ca2_key), &pki.inter_key));
    let leaf = der_of(&issue(leaf_profile("CN=CA2"), LEAF, spki(&pki.leaf_key), &ca2_key));
    let doc = synthetic(leaf.clone(), vec![pki.root.clone(), pki.inter.clone(), ca2.clone()]);
    assert!(chain_error(pki.verifier().verify(
        &pki.sign(&doc),
        ts(),
        &Expectations::default()
    )));
    // With pathlen 1 on the first intermediate it is fine.
    let inter1 = der_of(&issue(
        sub_ca(ROOT, Some(1)),
        INTER,
        spki(&pki.inter_key),
        &pki.root_key,
    ));
    let doc = synthetic(leaf, vec![pki.root.clone(), inter1, ca2]);
    assert!(
        pki.verifier()
            .verify(&pki.sign(&doc), ts(), &Expectations::default())
            .is_ok()
    );
}

#[test]
fn anchor_path_length_is_enforced() {
    let root_key = key(21);
    let root = der_of(&issue(sub_ca(ROOT, Some(0)), ROOT, spki(&root_key), &root_key));
    let pki = Pki::new();
    let inter = der_of(&issue(sub_ca(ROOT, None), INTER, spki(&pki.inter_key), &root_key));
    let verifier = Verifier::new(TrustAnchor::from_der(&root).expect("anchor"));
    let doc = synthetic(pki.leaf.clone(), vec![root.clone(), inter]);
    assert!(chain_error(verifier.verify(
        &pki.sign(&doc),
        ts(),
        &Expectations::default()
    )));
}

#[test]
fn leaf_must_not_be_a_ca_and_intermediates_must_be() {
    let pki = Pki::new();
    let verifier = pki.verifier();
    let ca_leaf = der_of(&issue(sub_ca(INTER, None), LEAF, spki(&pki.leaf_key), &pki.inter_key));
    let doc = synthetic(ca_leaf, vec![pki.root.clone(), pki.inter.clone()]);
    let r = verifier.verify(&pki.sign(&doc), ts(), &Expectations::default());
    assert_eq!(
        r,
        Err(AttestationError::ChainInvalid("the leaf certificate is a CA".into()))
    );

    let not_ca = der_of(&issue(leaf_profile(ROOT), INTER, spki(&pki.inter_key), &pki.root_key));
    let doc = synthetic(pki.leaf.clone(), vec![pki.root.clone(), not_ca]);
    let r = verifier.verify(&pki.sign(&doc), ts(), &Expectations::default());
    assert_eq!(
        r,
        Err(AttestationError::ChainInvalid(
            "intermediate certificate 1 is not a CA".into()
        ))
    );
}

fn with_extension(cert: &[u8], issuer: &SigningKey, edit: impl FnOnce(&mut Vec<Extension>)) -> Vec<u8> {
    let mut cert = Certificate::from_der(cert).expect("cert");
    edit(cert.tbs_certificate.extensions.get_or_insert_with(Vec::new));
    resign(cert, issuer)
}

#[test]
fn key_usage_and_critical_extensions() {
    let pki = Pki::new();
    let verifier = pki.verifier();
    let sign = |inter: Vec<u8>, leaf: Vec<u8>| pki.sign(&synthetic(leaf, vec![pki.root.clone(), inter]));
    let key_usage = |usages| {
        let value = KeyUsage(usages).to_der().expect("ku");
        move |exts: &mut Vec<Extension>| {
            for ext in exts.iter_mut().filter(|e| e.extn_id == KeyUsage::OID) {
                ext.extn_value = der::asn1::OctetString::new(value.clone()).expect("octets");
            }
        }
    };

    // A CA whose keyUsage lacks keyCertSign.
    let inter = with_extension(&pki.inter, &pki.root_key, key_usage(KeyUsages::DigitalSignature.into()));
    assert!(chain_error(verifier.verify(
        &sign(inter, pki.leaf.clone()),
        ts(),
        &Expectations::default()
    )));
    // A leaf whose keyUsage lacks digitalSignature.
    let leaf = with_extension(&pki.leaf, &pki.inter_key, key_usage(KeyUsages::KeyEncipherment.into()));
    assert!(chain_error(verifier.verify(
        &sign(pki.inter.clone(), leaf),
        ts(),
        &Expectations::default()
    )));
    // No keyUsage at all is fine (the check applies when present); no AKI/SKI is fine.
    let bare = |cert: &[u8], issuer: &SigningKey| {
        with_extension(cert, issuer, |exts| {
            exts.retain(|e| e.extn_id == BasicConstraints::OID);
        })
    };
    let doc = sign(bare(&pki.inter, &pki.root_key), bare(&pki.leaf, &pki.inter_key));
    assert!(verifier.verify(&doc, ts(), &Expectations::default()).is_ok());
    // An unknown critical extension.
    let unknown = |exts: &mut Vec<Extension>| {
        exts.push(Extension {
            extn_id: der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.1"),
            critical: true,
            extn_value: der::asn1::OctetString::new(vec![0x05, 0x00]).expect("octets"),
        });
    };
    let leaf = with_extension(&pki.leaf, &pki.inter_key, unknown);
    assert!(chain_error(verifier.verify(
        &sign(pki.inter.clone(), leaf),
        ts(),
        &Expectations::default()
    )));
    // A duplicated extension.
    let leaf = with_extension(&pki.leaf, &pki.inter_key, |exts| {
        let first = exts[0].clone();
        exts.push(first);
    });
    assert!(chain_error(verifier.verify(
        &sign(pki.inter.clone(), leaf),
        ts(),
        &Expectations::default()
    )));
    // A CA without basicConstraints.
    let inter = with_extension(&pki.inter, &pki.root_key, |exts| {
        exts.retain(|e| e.extn_id != BasicConstraints::OID)
    });
    assert!(chain_error(verifier.verify(
        &sign(inter, pki.leaf.clone()),
        ts(),
        &Expectations::default()
    )));
}

#[test]
fn certificate_signatures_and_names_are_checked() {
    let pki = Pki::new();
    let verifier = pki.verifier();
    // The leaf signed by the root instead of its named issuer.
    let leaf = resign(Certificate::from_der(&pki.leaf).expect("leaf"), &pki.root_key);
    let doc = synthetic(leaf, vec![pki.root.clone(), pki.inter.clone()]);
    assert!(chain_error(verifier.verify(
        &pki.sign(&doc),
        ts(),
        &Expectations::default()
    )));
    // The leaf naming another issuer.
    let mut leaf = Certificate::from_der(&pki.leaf).expect("leaf");
    leaf.tbs_certificate.issuer = name("CN=Someone Else");
    let doc = synthetic(resign(leaf, &pki.inter_key), vec![pki.root.clone(), pki.inter.clone()]);
    assert!(chain_error(verifier.verify(
        &pki.sign(&doc),
        ts(),
        &Expectations::default()
    )));
    // Garbage as a certificate.
    let doc = synthetic(b"not a certificate".to_vec(), vec![pki.root.clone(), pki.inter.clone()]);
    assert!(chain_error(verifier.verify(
        &pki.sign(&doc),
        ts(),
        &Expectations::default()
    )));
    // Too many intermediates.
    let doc = synthetic(pki.leaf.clone(), vec![pki.inter.clone(); MAX_INTERMEDIATES + 2]);
    assert!(chain_error(verifier.verify(
        &pki.sign(&doc),
        ts(),
        &Expectations::default()
    )));
}

#[test]
fn other_algorithms_are_unsupported() {
    let pki = Pki::new();
    let verifier = pki.verifier();
    // A P-256 leaf key.
    let p256_key = p256::ecdsa::SigningKey::from_slice(&[5; 32]).expect("p256");
    let p256_spki = SubjectPublicKeyInfoOwned::from_key(*p256_key.verifying_key()).expect("spki");
    let leaf = der_of(&issue(leaf_profile(INTER), LEAF, p256_spki, &pki.inter_key));
    let doc = synthetic(leaf, vec![pki.root.clone(), pki.inter.clone()]);
    assert_eq!(
        verifier.verify(&pki.sign(&doc), ts(), &Expectations::default()),
        Err(AttestationError::UnsupportedAlgorithm)
    );
    // A certificate claiming ecdsa-with-SHA256.
    let mut leaf = Certificate::from_der(&pki.leaf).expect("leaf");
    let sha256 = der::oid::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
    leaf.signature_algorithm.oid = sha256;
    leaf.tbs_certificate.signature.oid = sha256;
    let doc = synthetic(resign(leaf, &pki.inter_key), vec![pki.root.clone(), pki.inter.clone()]);
    assert_eq!(
        verifier.verify(&pki.sign(&doc), ts(), &Expectations::default()),
        Err(AttestationError::UnsupportedAlgorithm)
    );
}

#[test]
fn invalid_signature_scalars_are_bad_signatures() {
    let pki = Pki::new();
    let mut cose = parse_cose(&pki.sign(&pki.doc())).expect("cose");
    for fill in [0x00, 0xff] {
        cose.signature = vec![fill; 96];
        let r = pki
            .verifier()
            .verify(&encode_cose(&cose), ts(), &Expectations::default());
        assert_eq!(r, Err(AttestationError::BadSignature));
    }
}

#[test]
fn mock_documents_verify_under_the_mock_root_only() {
    use crate::mock::{MockAttester, MockPki};
    let attester = MockAttester::new(MockPki::ephemeral().expect("mock pki"));
    let verifier = Verifier::new(TrustAnchor::from_der(attester.pki().root_der()).expect("mock anchor"));
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis();
    let now_ms = u64::try_from(now_ms).expect("ms");
    let doc = attester
        .attest(Some(b"ud"), Some(b"n0"), Some(b"pk"), now_ms)
        .expect("attest");
    let now = at_ms(i128::from(now_ms));
    let expect = Expectations {
        nonce: Some(b"n0".to_vec()),
        ..Expectations::default()
    };
    let v = verifier.verify(&doc, now, &expect).expect("mock document verifies");
    assert_eq!(v.public_key(), Some(&b"pk"[..]));
    assert!(verifier.verify(&doc, now, &expect).is_ok());
    assert_eq!(verifier.cache_hits(), 1);
    assert_eq!(AWS.verify(&doc, now, &expect), Err(AttestationError::UntrustedRoot));
    let other = MockPki::ephemeral().expect("other mock pki");
    let other = Verifier::new(TrustAnchor::from_der(other.root_der()).expect("anchor"));
    assert_eq!(other.verify(&doc, now, &expect), Err(AttestationError::UntrustedRoot));
}
