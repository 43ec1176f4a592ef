"""Create the bucket that STRATA_BUCKET_URL names, unless it exists: for an S3 server that
starts empty (the SeaweedFS of deploy/overlays/seaweedfs and deploy/compose).

Reads the URL the way Strata does (s3://bucket/prefix?endpoint=…&region=…&path_style=…,
docs/object-stores.md) and the credentials from boto3's usual places (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY). Retries while the server is still starting, for at most
CREATE_BUCKET_TIMEOUT_S seconds (300). Exit status 0 when the bucket exists, 1 when it
could not be created in time, 2 for a URL that names no S3 bucket.
"""

from __future__ import annotations

import os
import sys
import time
from urllib.parse import parse_qsl, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

RETRY_INTERVAL_S = 2.0
# Answers meaning the bucket is there already, ours or not: nothing left to do here.
EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})


def create_bucket(url: str, timeout_s: float) -> int:
    """Create the URL's bucket, retrying until it exists or the time is up."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        print(f"create_bucket: not an s3:// bucket URL: {url!r}", file=sys.stderr)
        return 2
    options = dict(parse_qsl(parts.query))
    path_style = options.get("path_style", "false").lower() in ("true", "1", "yes")
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=options.get("endpoint") or None,
        region_name=options.get("region") or None,
        aws_access_key_id=options.get("access_key") or None,
        aws_secret_access_key=options.get("secret_key") or None,
        config=Config(
            retries={"mode": "standard", "max_attempts": 1},
            connect_timeout=5,
            read_timeout=10,
            s3={"addressing_style": "path" if path_style else "auto"},
        ),
    )
    bucket = parts.netloc
    deadline = time.monotonic() + timeout_s
    last_problem = ""
    while True:
        try:
            client.create_bucket(Bucket=bucket)
            print(f"create_bucket: created bucket {bucket}")
            return 0
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in EXISTS_CODES:
                print(f"create_bucket: bucket {bucket} exists")
                return 0
            problem = str(exc)
        except BotoCoreError as exc:
            problem = str(exc)
        if problem != last_problem:
            # Once per distinct problem: a server still starting repeats the same one.
            print(f"create_bucket: {problem}; retrying", file=sys.stderr)
            last_problem = problem
        if time.monotonic() + RETRY_INTERVAL_S > deadline:
            print(
                f"create_bucket: bucket {bucket} not created in {timeout_s:.0f} s: {problem}",
                file=sys.stderr,
            )
            return 1
        time.sleep(RETRY_INTERVAL_S)


def main() -> int:
    """Entry point: the bucket of STRATA_BUCKET_URL."""
    url = os.environ.get("STRATA_BUCKET_URL", "")
    timeout_s = float(os.environ.get("CREATE_BUCKET_TIMEOUT_S", "300"))
    return create_bucket(url, timeout_s)


if __name__ == "__main__":
    sys.exit(main())
