"""Test helper for moto (run by the e2e tests with TETHER_TEST_PYTHON). Uses the admin user that
scripts/moto_bootstrap.py created (TETHER_TEST_AWS_ADMIN=KEY_ID:SECRET) while moto enforces
IAM (INITIAL_NO_AUTH_ACTION_COUNT).

  setup TAG        -> JSON: a user with its own access key, a KMS key, and two managed policies
                      attached to the user: one allowing kms:Encrypt (+ Secrets Manager), one
                      allowing kms:Decrypt
  detach TAG ARN   -> detaches the policy ARN from the user (revokes access)
  attach TAG ARN   -> attaches it again (restores access)
  get-secret NAME  -> prints the base64 SecretBinary of a Secrets Manager secret (AWSCURRENT),
                      or "missing"
"""
import json, os, sys, boto3

kid, secret = os.environ["TETHER_TEST_AWS_ADMIN"].split(":", 1)
def c(svc):
    return boto3.client(svc, endpoint_url=os.environ["TETHER_TEST_MOTO_URL"], region_name="us-east-1",
                        aws_access_key_id=kid, aws_secret_access_key=secret)

cmd = sys.argv[1]
if cmd == "setup":
    tag = sys.argv[2]
    iam, kms = c("iam"), c("kms")
    user = f"tether-{tag}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    def policy(name, actions):
        doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
        arn = iam.create_policy(PolicyName=f"{name}-{tag}", PolicyDocument=json.dumps(doc))["Policy"]["Arn"]
        iam.attach_user_policy(UserName=user, PolicyArn=arn)
        return arn
    enc = policy("kms-encrypt", ["kms:Encrypt", "kms:DescribeKey", "secretsmanager:*"])
    dec = policy("kms-decrypt", ["kms:Decrypt"])
    arn = kms.create_key(Description=f"tether test {tag}")["KeyMetadata"]["Arn"]
    print(json.dumps({"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"],
                      "key_arn": arn, "encrypt_policy": enc, "decrypt_policy": dec, "user": user}))
elif cmd in ("detach", "attach"):
    iam = c("iam")
    fn = iam.detach_user_policy if cmd == "detach" else iam.attach_user_policy
    fn(UserName=f"tether-{sys.argv[2]}", PolicyArn=sys.argv[3])
elif cmd == "get-secret":
    import base64
    sm = c("secretsmanager")
    try:
        v = sm.get_secret_value(SecretId=sys.argv[2], VersionStage="AWSCURRENT")
        print(base64.b64encode(v["SecretBinary"]).decode())
    except sm.exceptions.ResourceNotFoundException:
        print("missing")
else:
    sys.exit(f"unknown command {cmd}")
