"""Unmodified AWS clients against a running Keyward.

Run by the integration test `compat::unmodified_python_clients` with
KEYWARD_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set. Exits
non-zero with a message on the first failure. Needs boto3, awscli and
aws-encryption-sdk (`.ci/run` installs them).
"""

import base64
import os
import subprocess
import sys
import tempfile

import boto3
import botocore.exceptions
import botocore.session

ENDPOINT = os.environ["KEYWARD_ENDPOINT"]
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
    kms = boto3.client("kms", endpoint_url=ENDPOINT, region_name=REGION)
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
        "kms", endpoint_url=ENDPOINT, region_name=REGION,
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"], aws_secret_access_key="x" * 40,
    )
    check(error_code(bad.list_keys)[0] == "InvalidSignatureException", "boto3 wrong secret rejected")
    return meta["Arn"]


def aws_cli(key_arn):
    with tempfile.TemporaryDirectory() as d:
        plain = os.path.join(d, "plain.bin")
        with open(plain, "wb") as f:
            f.write(b"aws cli secret")
        base = ["aws", "kms", "--endpoint-url", ENDPOINT, "--region", REGION, "--output", "text"]
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
    session = botocore.session.Session()
    client = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    provider = StrictAwsKmsMasterKeyProvider(key_ids=[key_arn], botocore_session=session)
    message, _ = client.encrypt(source=b"esdk secret" * 100, key_provider=provider, encryption_context={"t": "1"})
    plain, header = client.decrypt(source=message, key_provider=provider)
    check(plain == b"esdk secret" * 100 and header.encryption_context.get("t") == "1",
          "AWS Encryption SDK encrypt/decrypt round trip")


if __name__ == "__main__":
    arn = boto3_client()
    aws_cli(arn)
    encryption_sdk(arn)
    print("all client checks passed")
