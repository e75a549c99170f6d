"""Unmodified AWS clients against a running Keyward.

Run by the integration test `compat::unmodified_python_clients` with
KEYWARD_ENDPOINT (https://), KEYWARD_CA_BUNDLE (the enclave CA, `ca.pem`),
AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set. TLS ends inside the
enclave: boto3 is given the CA with `verify=`, the aws CLI with
`--ca-bundle`, the AWS Encryption SDK through `AWS_CA_BUNDLE`. Exits
non-zero with a message on the first failure. Needs boto3, awscli and
aws-encryption-sdk (`.ci/run` installs them; `cryptography` comes with them).
"""

import base64
import logging
import os
import subprocess
import sys
import tempfile

import boto3
import botocore.exceptions
import botocore.session

ENDPOINT = os.environ["KEYWARD_ENDPOINT"]
CA_BUNDLE = os.environ["KEYWARD_CA_BUNDLE"]
REGION = "us-east-1"


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def error_code(fn, **kwargs):
    try:
        fn(**kwargs)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    return None, 200


def boto3_client():
    kms = boto3.client("kms", endpoint_url=ENDPOINT, region_name=REGION, verify=CA_BUNDLE)
    meta = kms.create_key(Description="boto3")["KeyMetadata"]
    check(meta["KeyState"] == "Enabled" and meta["Arn"].startswith("arn:aws:kms:us-east-1:"), "boto3 CreateKey")
    key = meta["KeyId"]
    ct = kms.encrypt(KeyId=key, Plaintext=b"boto3 secret", EncryptionContext={"app": "compat"})["CiphertextBlob"]
    pt = kms.decrypt(CiphertextBlob=ct, EncryptionContext={"app": "compat"})["Plaintext"]
    check(pt == b"boto3 secret", "boto3 Encrypt/Decrypt round trip")
    check(error_code(kms.decrypt, CiphertextBlob=ct) == ("InvalidCiphertextException", 400), "boto3 context is bound")
    dk = kms.generate_data_key(KeyId=meta["Arn"], KeySpec="AES_256")
    check(len(dk["Plaintext"]) == 32, "boto3 GenerateDataKey")
    check(kms.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"], "boto3 data key decrypts")
    check(len(kms.generate_random(NumberOfBytes=17)["Plaintext"]) == 17, "boto3 GenerateRandom")
    check(any(k["KeyId"] == key for k in kms.list_keys()["Keys"]), "boto3 ListKeys")
    check(error_code(kms.describe_key, KeyId="alias/absent")[0] == "NotFoundException", "boto3 NotFoundException")
    check(error_code(kms.generate_random, NumberOfBytes=2000)[0] == "ValidationException", "boto3 ValidationException")
    bad = boto3.client(
        "kms", endpoint_url=ENDPOINT, region_name=REGION, verify=CA_BUNDLE,
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"], aws_secret_access_key="x" * 40,
    )
    check(error_code(bad.list_keys)[0] == "InvalidSignatureException", "boto3 wrong secret rejected")
    # Without the CA the certificate does not verify: TLS is real.
    untrusting = boto3.client("kms", endpoint_url=ENDPOINT, region_name=REGION)
    try:
        untrusting.list_keys()
        verified = False
    except botocore.exceptions.SSLError:
        verified = True
    check(verified, "boto3 without the CA bundle refuses the certificate")
    return meta["Arn"]


def boto3_lifecycle():
    """create -> encrypt -> rotate -> decrypt the old ciphertext -> ECC sign/verify
    (checked independently with `cryptography`) -> schedule deletion."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    kms = boto3.client("kms", endpoint_url=ENDPOINT, region_name=REGION, verify=CA_BUNDLE)
    key = kms.create_key(Description="boto3 lifecycle")["KeyMetadata"]["KeyId"]
    secret = os.urandom(64)
    old_ct = kms.encrypt(KeyId=key, Plaintext=secret, EncryptionContext={"stage": "before"})["CiphertextBlob"]
    rotated = kms.rotate_key_on_demand(KeyId=key)
    check(rotated["KeyId"] in (key, kms.describe_key(KeyId=key)["KeyMetadata"]["Arn"]), "boto3 RotateKeyOnDemand")
    rotations = kms.list_key_rotations(KeyId=key)["Rotations"]
    check(len(rotations) == 1 and rotations[0]["RotationType"] == "ON_DEMAND", "boto3 ListKeyRotations after a rotation")
    out = kms.decrypt(CiphertextBlob=old_ct, EncryptionContext={"stage": "before"})
    check(out["Plaintext"] == secret, "boto3 Decrypt of a ciphertext made before the rotation")
    new_ct = kms.encrypt(KeyId=key, Plaintext=secret)["CiphertextBlob"]
    check(new_ct[17:21] != old_ct[17:21], "boto3 Encrypt after rotation uses a new key version")
    check(kms.decrypt(CiphertextBlob=new_ct)["Plaintext"] == secret, "boto3 Decrypt after rotation")
    re = kms.re_encrypt(CiphertextBlob=old_ct, SourceEncryptionContext={"stage": "before"}, DestinationKeyId=key)
    check(kms.decrypt(CiphertextBlob=re["CiphertextBlob"])["Plaintext"] == secret, "boto3 ReEncrypt")

    ecc = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    check(ecc["SigningAlgorithms"] == ["ECDSA_SHA_256"], "boto3 CreateKey ECC_NIST_P256")
    message = b"signed by keyward " + os.urandom(16)
    sig = kms.sign(KeyId=ecc["KeyId"], Message=message, MessageType="RAW",
                   SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    valid = kms.verify(KeyId=ecc["KeyId"], Message=message, MessageType="RAW", Signature=sig,
                       SigningAlgorithm="ECDSA_SHA_256")["SignatureValid"]
    check(valid is True, "boto3 Sign/Verify")
    check(error_code(kms.verify, KeyId=ecc["KeyId"], Message=message + b"!", MessageType="RAW", Signature=sig,
                     SigningAlgorithm="ECDSA_SHA_256") == ("KMSInvalidSignatureException", 400),
          "boto3 Verify of a tampered message")
    der = kms.get_public_key(KeyId=ecc["KeyId"])["PublicKey"]
    public = serialization.load_der_public_key(der)
    check(isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1",
          "GetPublicKey is a P-256 SubjectPublicKeyInfo")
    try:
        public.verify(sig, message, ec.ECDSA(hashes.SHA256()))
        independent = True
    except InvalidSignature:
        independent = False
    check(independent, "the signature verifies with `cryptography` against GetPublicKey")
    try:
        public.verify(sig, message + b"!", ec.ECDSA(hashes.SHA256()))
        tampered_ok = True
    except InvalidSignature:
        tampered_ok = False
    check(not tampered_ok, "`cryptography` rejects the signature for another message")

    for k in (key, ecc["KeyId"]):
        out = kms.schedule_key_deletion(KeyId=k, PendingWindowInDays=7)
        check(out["KeyState"] == "PendingDeletion" and out["PendingWindowInDays"] == 7,
              "boto3 ScheduleKeyDeletion")
        meta = kms.describe_key(KeyId=k)["KeyMetadata"]
        check(meta["KeyState"] == "PendingDeletion" and not meta["Enabled"] and "DeletionDate" in meta,
              "boto3 DescribeKey shows PendingDeletion with a DeletionDate")
    check(error_code(kms.decrypt, CiphertextBlob=new_ct) == ("KMSInvalidStateException", 400),
          "boto3 Decrypt under a pending key")


def aws_cli(key_arn):
    with tempfile.TemporaryDirectory() as d:
        plain = os.path.join(d, "plain.bin")
        with open(plain, "wb") as f:
            f.write(b"aws cli secret")
        base = ["aws", "kms", "--endpoint-url", ENDPOINT, "--ca-bundle", CA_BUNDLE, "--region", REGION,
                "--output", "text"]
        out = subprocess.run(
            base + ["encrypt", "--key-id", key_arn, "--plaintext", "fileb://" + plain, "--query", "CiphertextBlob"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        blob = os.path.join(d, "ct.bin")
        with open(blob, "wb") as f:
            f.write(base64.b64decode(out))
        out = subprocess.run(
            base + ["decrypt", "--ciphertext-blob", "fileb://" + blob, "--query", "Plaintext"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        check(base64.b64decode(out) == b"aws cli secret", "aws CLI encrypt/decrypt round trip")


def encryption_sdk(key_arn):
    import aws_encryption_sdk
    from aws_encryption_sdk import CommitmentPolicy
    from aws_encryption_sdk.key_providers.kms import StrictAwsKmsMasterKeyProvider

    os.environ["AWS_ENDPOINT_URL_KMS"] = ENDPOINT
    os.environ["AWS_CA_BUNDLE"] = CA_BUNDLE
    session = botocore.session.Session()
    client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    provider = StrictAwsKmsMasterKeyProvider(key_ids=[key_arn], botocore_session=session)
    source = os.urandom(1024 * 1024)
    message, _ = client.encrypt(source=source, key_provider=provider, encryption_context={"t": "1"})
    check(len(message) > len(source) and source[:4096] not in message, "AWS Encryption SDK encrypts 1 MiB")
    plain, header = client.decrypt(source=message, key_provider=provider)
    check(plain == source and header.encryption_context.get("t") == "1",
          "AWS Encryption SDK encrypt/decrypt round trip of 1 MiB")
    tampered = bytearray(message)
    tampered[len(tampered) // 2] ^= 1
    # The ESDK logs a traceback of the bad tag while closing its stream; keep
    # that out of the test output.
    logging.getLogger("aws_encryption_sdk").setLevel(logging.CRITICAL)
    try:
        client.decrypt(source=bytes(tampered), key_provider=provider)
        rejected = False
    except Exception:  # the ESDK raises its own error types on a bad tag
        rejected = True
    check(rejected, "AWS Encryption SDK rejects a tampered 1 MiB message")


def boto3_byok():
    """BYOK as AWS's import guide does it with boto3 and `cryptography`."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

    kms = boto3.client("kms", endpoint_url=ENDPOINT, region_name=REGION, verify=CA_BUNDLE)
    meta = kms.create_key(Origin="EXTERNAL", Description="boto3 byok")["KeyMetadata"]
    key = meta["KeyId"]
    check(meta["KeyState"] == "PendingImport" and meta["Origin"] == "EXTERNAL", "boto3 CreateKey Origin=EXTERNAL")
    material = os.urandom(32)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)

    def wrapped(algorithm):
        params = kms.get_parameters_for_import(KeyId=key, WrappingAlgorithm=algorithm, WrappingKeySpec="RSA_3072")
        public = serialization.load_der_public_key(params["PublicKey"])
        check(public.key_size == 3072, f"boto3 GetParametersForImport {algorithm} gives an RSA-3072 key")
        if algorithm == "RSAES_OAEP_SHA_256":
            return params["ImportToken"], public.encrypt(material, oaep)
        aes_key = os.urandom(32)
        return params["ImportToken"], public.encrypt(aes_key, oaep) + aes_key_wrap_with_padding(aes_key, material)

    token, encrypted = wrapped("RSA_AES_KEY_WRAP_SHA_256")
    kms.import_key_material(KeyId=key, ImportToken=token, EncryptedKeyMaterial=encrypted,
                            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    check(kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled", "boto3 ImportKeyMaterial")
    ct = kms.encrypt(KeyId=key, Plaintext=b"byok secret")["CiphertextBlob"]
    check(kms.decrypt(CiphertextBlob=ct)["Plaintext"] == b"byok secret", "boto3 Encrypt/Decrypt with imported material")
    kms.delete_imported_key_material(KeyId=key)
    check(error_code(kms.decrypt, CiphertextBlob=ct)[0] == "KMSInvalidStateException",
          "boto3 Decrypt fails after DeleteImportedKeyMaterial")
    token, encrypted = wrapped("RSAES_OAEP_SHA_256")
    kms.import_key_material(KeyId=key, ImportToken=token, EncryptedKeyMaterial=encrypted,
                            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    check(kms.decrypt(CiphertextBlob=ct)["Plaintext"] == b"byok secret", "boto3 re-import of the same material")


if __name__ == "__main__":
    arn = boto3_client()
    boto3_byok()
    boto3_lifecycle()
    aws_cli(arn)
    encryption_sdk(arn)
    print("all client checks passed")
