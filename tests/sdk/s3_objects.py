"""Reads or changes a bucket on the S3 emulator with boto3 from the emulators' venv
(.venv-emu; the SDK's venv pins packages boto3 cannot share). Used by the SDK suite
through a subprocess; prints JSON.

    s3_objects.py ENDPOINT create BUCKET
    s3_objects.py ENDPOINT dump BUCKET        -> {"key": "<base64 of the bytes>", ...}
    s3_objects.py ENDPOINT delete BUCKET KEY
"""

import base64
import json
import sys

import boto3

endpoint, action, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = boto3.client(
    "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
)
if action == "create":
    s3.create_bucket(Bucket=bucket)
    print("{}")
elif action == "dump":
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])
            out[obj["Key"]] = {
                "body": base64.b64encode(body["Body"].read()).decode(),
                "content_type": body.get("ContentType"),
            }
    print(json.dumps(out))
elif action == "delete":
    s3.delete_object(Bucket=bucket, Key=sys.argv[4])
    print("{}")
else:
    sys.exit(f"unknown action {action}")
