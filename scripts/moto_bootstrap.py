"""Bootstraps moto's IAM while auth is not enforced yet (INITIAL_NO_AUTH_ACTION_COUNT=3):
an `admin` user with an access key and an allow-all inline policy. Prints `KEY_ID:SECRET`."""
import json, os, boto3

iam = boto3.client("iam", endpoint_url=os.environ["MOTO_URL"], region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
iam.create_user(UserName="tether-test-admin")                                        # 1
key = iam.create_access_key(UserName="tether-test-admin")["AccessKey"]               # 2
iam.put_user_policy(UserName="tether-test-admin", PolicyName="all",                  # 3
                    PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
                        {"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
print(f"{key['AccessKeyId']}:{key['SecretAccessKey']}")
