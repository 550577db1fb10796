"""Redaction rules: a corpus of secrets (every one fake, shaped like the real
thing) is removed wherever it is placed, ordinary text is left alone, and HMAC
mode correlates equal secrets under one tenant's key only."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import random
import re
import time
from datetime import UTC, datetime
from string import ascii_letters, digits
from typing import Any

import pytest

from sealtrail_server.domain.event import EventDraft, validate_event
from sealtrail_server.domain.payment_cards import PAYMENT_CARD
from sealtrail_server.domain.redaction import HMAC_PREFIX, Redactor, hmac_token
from sealtrail_server.domain.secret_shapes import either_case, random_value
from sealtrail_server.domain.text_patterns import ValuePattern

REDACTOR = Redactor()

# (rule, the secret, text around it with {} where the secret goes)
SECRETS: list[tuple[str, str, str]] = [
    (
        "jwt",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "session {} expired",
    ),
    (
        "jwt",
        "eyJraWQiOiJrMSIsImFsZyI6IlJTMjU2In0.eyJpc3MiOiJhY21lIiwiZXhwIjoxfQ.c2lnbmF0dXJlLWJ5dGVzLWhlcmU",
        "id_token {}",
    ),
    (
        "jwt",
        "eyJraWQiOiJrMSIsImFsZyI6IlJTMjU2In0.eyJpc3MiOiJhY21lIiwiZXhwIjoxfQ.c2lnbmF0dXJlLWJ5dGVzLWhlcmU",
        "callback?state=1&id_token%3D{}",
    ),
    ("bearer", "mF_9.B5f-4.1JqM", "Authorization: Bearer {}"),
    ("bearer", "ya29.a0AfH6SMBx3kLq9Zt", "sent header 'authorization: bearer {}' upstream"),
    # After `+`, a form's space (Python's urlencode, an HTML form), where no
    # `name=` put it in reach of the entropy rule (helper-335).
    ("bearer", "kR7Zp2vQ9wX4tL", "cmd=curl+-H+%22X-Api-Auth%3A+Bearer+{}%22+https%3A%2F%2Fapi"),
    ("bearer", "mF_9.B5f-4.1JqM", "q=%22Bearer+{}%22&page=2"),
    # Letters alone, of both cases: a credential still (helper-335).
    ("bearer", "kRzQpvXwLtYmNbHsJd", "curl -H 'Authorization: Bearer {}'"),
    # After "Authorization: Bearer" a credential whatever its letters: only the
    # prose rule's check kept one of lower-case letters alone (d2a57638).
    ("bearer", "qzkwmfhtrvplbxnd", "Authorization: Bearer {}"),
    ("bearer", "qzkwmfhtrvplbxnd", '{{"authorization": "bearer {}"}}'),
    ("basic_auth", "YWxhZGRpbjpvcGVuc2VzYW1l", "Authorization: Basic {}"),
    ("basic_auth", "dXNlcjpodW50ZXIy", "curl -H 'Authorization: basic {}'"),
    ("aws_access_key", "AKIAIOSFODNN7EXAMPLE", "rotated key {} for ci"),
    ("aws_access_key", "ASIAY34FZKBOKMUTVV7A", "{}"),
    ("github_token", "ghp_16C7e42F292c6912E7710c838347Ae178B4a", "pushed with {}"),
    ("github_token", "gho_16C7e42F292c6912E7710c838347Ae178B4b", "oauth {} granted"),
    ("github_token", "ghs_16C7e42F292c6912E7710c838347Ae178B4c", "{}"),
    (
        "github_token",
        "github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQR",
        "token {}",
    ),
    ("stripe_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "charged with {}"),
    ("stripe_key", "rk_test_51H8x2eF4kLmNoPqRsTuVwXyZ", "restricted {}"),
    ("slack_token", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "bot {}"),
    ("slack_token", "xoxp-123456789012-123456789012-123456789012-abcdef1234567890", "{}"),
    # An app-level token (Socket Mode) and a rotating refresh token.
    (
        "slack_token",
        "xapp-1-A0123ABCDEF-4567890123456-0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a6978",
        "SLACK_APP_TOKEN {}",
    ),
    ("slack_token", "xoxe-1-My0xLTA0NTY3ODkwMTIzNC1hYmNkZWYxMjM0NTY3ODkw", "refreshed with {}"),
    ("stripe_key", "whsec_5f8Kd2LmQ9xTz3Wv7Rb1Nc6Hy4Jp0Ase", "webhook signed by {}"),
    (
        "slack_webhook",
        "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        "alerts go to {}",
    ),
    (
        "pem_private_key",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
        "-----END RSA PRIVATE KEY-----",
        "key:\n{}\n",
    ),
    (
        "pem_private_key",
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGF3x\n-----END PRIVATE KEY-----",
        "{}",
    ),
    (
        "pem_private_key",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----",
        "deploy key {}",
    ),
    ("url_password", "s3cr3tP4ss", "postgres://app:{}@db.internal:5432/main"),
    ("url_password", "hunter2!", "connected to https://admin:{}@example.com/"),
    ("secret_assignment", "hunter2", "login failed for password={}"),
    ("secret_assignment", "Tr0ub4dor&3", "user set PASSWORD: {} then left"),
    ("secret_assignment", "abc123xyz", "config client_secret={}"),
    ("secret_assignment", "tok_live_99", "api_key={}&page=2"),
    ("secret_assignment", "qwerty-12", "db_passwd = '{}'"),
    ("secret_assignment", "s00persecret", 'env {{"AWS_SECRET_ACCESS_KEY": "{}"}}'),
    ("high_entropy_assignment", "Zq8vN2xLmR4tY7wK1pS9dF3gH6jB0cXe", "signing seed={} loaded"),
    ("high_entropy_assignment", "a9F+3kLm/Qz7Xw2Rt8Yp5Vn1Bc6Hd4Jg==", "blob: {}"),
    ("sealtrail_token", "stk_3f9aK2mQ8xW1zR7tY4pL6nB0vC5dH9jG", "issued {}"),
    # Both formats whole (ADR 0111): issued before the checksum, and since.
    ("sealtrail_token", "stk_3f9aK2mQ8xW1zR7tY4pL6nB0vC5dH9jG-_aB3cD4eF5", "SEALTRAIL_TOKEN={}"),
    ("sealtrail_token", "stk_SealtrailExampleTokenOnlyNotARealSecret01231WNqTA", "leaked {}."),
    # Right after a percent-encoded character (a URL, a form body, a header
    # logged encoded) or an escaped line break, which end in a letter or digit.
    (
        "sealtrail_token",
        "stk_SealtrailExampleTokenOnlyNotARealSecret01231WNqTA",
        "GET /cb?a=Bearer%20{}",
    ),
    ("sealtrail_token", "stk_3f9aK2mQ8xW1zR7tY4pL6nB0vC5dH9jG-_aB3cD4eF5", "next=%2Fcb%3Fid%3D{}"),
    ("sealtrail_token", "stk_SealtrailExampleTokenOnlyNotARealSecret01231WNqTA", "q=%22{}%22"),
    ("sealtrail_token", "stk_3f9aK2mQ8xW1zR7tY4pL6nB0vC5dH9jG-_aB3cD4eF5", "said:\\n{}\\n"),
    # Every other token shape, after the same: a percent-encoded character, an
    # escaped line break or tab, or a character JSON escaped as `\uXXXX`
    # (.NET writes `"` so) end in a letter or digit, and each rule wanted a
    # word boundary before the token (helper-330).
    ("aws_access_key", "AKIAIOSFODNN7EXAMPLE", "GET /s3?creds=%22{}%22"),
    ("github_token", "ghp_16C7e42F292c6912E7710c838347Ae178B4a", "remote:\\n{}\\n"),
    ("stripe_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "form key%3D{}%26amount%3D100"),
    ("slack_token", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "auth=%20{}"),
    ("ai_api_key", "sk-B8fnvGNx6jvr7SIftRutlZfOjUStEkUdfMI7zcpVMw0qDPAj", "h=x-api-key%3A%20{}"),
    (
        "google_api_key",
        "AIzauPnBIKpi99lSi0tcL21pffWQJEeNajnez0L",
        "{{\\u0022key\\u0022:\\u0022{}\\u0022}}",
    ),
    ("gitlab_token", "glpat-NqjSc3vux9i53yyD3HyP", "PRIVATE-TOKEN%3A%20{}"),
    ("npm_token", "npm_3MRJgN8ZGrBOUTp7tBqHtJvaYALubyNLOidO", ".npmrc:\\t{}"),
    ("huggingface_token", "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", "q=%22{}%22"),
    (
        "sendgrid_key",
        "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",
        "auth=Bearer%20{}",
    ),
    ("vault_token", "hvr.TPvXAqbVLqJJHLeJWbqEFcbI", "X-Vault-Token%3A%20{}"),
    ("google_oauth", "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", "secret%3D{}"),
    ("shopify_token", "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", "headers:\\n{}"),
    (
        "age_secret_key",
        "AGE-SECRET-KEY-1E83H3JY48R0U5K96ZAH97XD7YG050FF9X4Z7D66WUC5X3X63UAS8WUTR4Q",
        "# created: 2026-12-06\\n{}\\n",
    ),
    ("twilio_api_key", "SK2de860461af1ada0b417ef600daaa14c", "sid=%22{}%22"),
    (
        "pypi_token",
        "pypi-AgEIcHlwaS5vcmcOvDwR6wMTrVFbLd9Rb9xqODtLMulxluWx2MqtYygX0bKRVitGoPZrpulRBPS",
        "[pypi]\\npassword = %20{}",
    ),
    (
        "digitalocean_token",
        "dop_v1_6d10f35970d13a48f1b763357840fc1878d1fa0141312f12fa5a2bcc9b86ad34",
        "Authorization%3A%20Bearer%20{}",
    ),
    (
        "sealtrail_token",
        "stk_SealtrailExampleTokenOnlyNotARealSecret01231WNqTA",
        "\\u0022{}\\u0022",
    ),
    (
        "jwt",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "cb?h=Bearer%20{}",
    ),
    ("url_password", "s3cr3tP4ss", "dsn=%0Apostgres://app:{}@db.internal:5432/main"),
    ("url_password", "hunter22", "next=%22https://user:{}@example.com/%22"),
    # After a backspace or a form feed JSON escaped (`\b`, `\f`: Python's
    # json, JavaScript's JSON.stringify, Go's encoding/json since 1.22), which
    # end in a letter too (helper-335).
    ("github_token", "ghp_16C7e42F292c6912E7710c838347Ae178B4a", "page 1\\f{}\\n"),
    ("sealtrail_token", "stk_SealtrailExampleTokenOnlyNotARealSecret01231WNqTA", "x\\b{}"),
    # JSON written by PHP's json_encode, which escapes every `/` as `\/`
    # (Laravel's and WordPress's logs): a URL's `://`, a base64 credential's
    # `/` (helper-335).
    ("url_password", "s3cr3tP4ss", '{{"dsn":"postgres:\\/\\/app:{}@db.internal:5432\\/main"}}'),
    (
        "slack_webhook",
        "https:\\/\\/hooks.slack.com\\/services\\/T00000000\\/B00000000\\/XXXXXXXXXXXXXXXXXXXXXXXX",
        '{{"hook":"{}"}}',
    ),
    ("bearer", "kR7Zp2v\\/Q9wX4t\\/LmN==", '{{"headers":{{"Authorization":"Bearer {}"}}}}'),
    ("basic_auth", "Y2k6YWI\\/P2NkPz5lZmdo", '{{"auth":"Basic {}"}}'),
    ("authorization_header", "0123\\/456789abcdef0129", '{{"Authorization":"Token {}"}}'),
    ("high_entropy_assignment", "a9F+3kL\\/Qz7Xw2Rt8Yp5Vn1Bc6Hd4Jg==", '{{"seed":"{}"}}'),
    # Credential headers percent-encoded, as a URL's query or a form carries
    # them, and after an escaped line break (helper-330).
    ("bearer", "kR7.Zp2-vQ9_wX4tL", "GET /cb?auth=Bearer%20{}&x=1"),
    ("basic_auth", "YWxhZGRpbjpvcGVuc2VzYW1l", "proxy=Basic%20{}"),
    ("authorization_header", "0123456789abcdef0124", "h=Authorization%3A%20Token%20{}&next=1"),
    (
        "authorization_header",
        "ZXlKaGJHY2lPaUpJVXpJMU5pSjk%3D",
        "q=%7B%22authorization%22%3A%22Signed%20{}%22%7D",
    ),
    ("authorization_header", "0123456789abcdef0126", "Host: a\\nAuthorization: Token {}\\n"),
    # With other characters encoded than base64's: a `:` (`Token user:pass`)
    # or a `~` (PHP's urlencode writes it `%7E`) cut it (helper-335).
    ("authorization_header", "user%3Apass12345678", "h=Authorization%3A%20Token%20{}&x=1"),
    ("authorization_header", "ab%7Ecd%7Eef123456789", "h=Authorization%3A%20Token%20{}&x=1"),
    ("cookie_header", "sid%3D8f3kq0aZ1%3B%20theme%3Ddark", "h=Cookie%3A%20{}&page=2"),
    ("cookie_header", "sid=9g4lr1bA2", "Host: a\\nCookie: {}\\nAccept: x"),
    # Quotes escaped as JSON writes them inside a string, `\"` or `\u0022`
    # (.NET's), around a header's name or a secret's (helper-330).
    (
        "authorization_header",
        "0123456789abcdef0127",
        'headers: {{\\"Authorization\\": \\"Token {}\\"}}',
    ),
    (
        "authorization_header",
        "0123456789abcdef0128",
        "{{\\u0022Authorization\\u0022:\\u0022Token {}\\u0022}}",
    ),
    ("cookie_header", "sid=9g4lr1bA3", '{{\\"Cookie\\": \\"{}\\"}}'),
    ("cookie_header", "sid=9g4lr1bA4", "{{\\u0022Set-Cookie\\u0022:\\u0022{}\\u0022}}"),
    (
        "secret_assignment",
        "correct horse 42",
        "body: {{\\u0022password\\u0022:\\u0022{}\\u0022,\\u0022u\\u0022:1}}",
    ),
    ("secret_assignment", "pin-7730q", "{{\\u0027pin\\u0027: \\u0027{}\\u0027}}"),
    (
        "high_entropy_assignment",
        "Zq8vN2xLmR4tY7wK1pS9dF3gH6jB0cXg",
        '{{\\"signing_seed\\": \\"{}\\"}}',
    ),
    (
        "high_entropy_assignment",
        "Zq8vN2xLmR4tY7wK1pS9dF3gH6jB0cXh",
        "{{\\u0022seed\\u0022:\\u0022{}\\u0022}}",
    ),
    (
        "secret_assignment",
        "hunter2net",
        "<add key=\\u0022Password\\u0022 value=\\u0022{}\\u0022/>",
    ),
    (
        "digest_response",
        "7739fae49393a05397450978507c4ef2",
        "Authorization: Digest username=\\u0022bob\\u0022, response=\\u0022{}\\u0022",
    ),
    # JSON percent-encoded, as a query or a form carries a body (helper-330).
    ("secret_assignment", "correct%20horse%2042", "q=%7B%22password%22%3A%22{}%22%7D"),
    ("secret_assignment", "pin-7731q", "body=%7B%22user%22%3A1%2C%22pin%22%3A%20%22{}%22%7D"),
    # A random-looking value after an encoded `=`, as a URL inside a URL's query has it.
    (
        "high_entropy_assignment",
        "Zq8vN2xLmR4tY7wK1pS9dF3gH6jB0cXi",
        "next=%2Fcb%3Fstate%3D{}%26x%3D1",
    ),
    ("url_password", "s3cretPass", "redis://:{}@cache:6379/0"),
    ("url_password", "p@ssw0rd", "postgres://admin:{}@db/app"),
    ("url_password", "hunter22", "HTTPS://user:{}@example.com/"),
    (
        "pem_private_key",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF3x\n-----END PGP PRIVATE KEY BLOCK-----",
        "exported {} by mistake",
    ),
    ("pem_private_key", "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU", "cut: {}"),
    ("authorization_header", "0123456789abcdef0123", "Authorization: Token {}"),
    ("cookie_header", "session=8f3a9e0b1c; theme=dark", "Cookie: {}"),
    ("secret_assignment", "hunter2hunter2", "passphrase={}"),
    ("secret_assignment", "let me in", 'body {{"password": "{}"}}'),
    ("secret_assignment", "correct horse battery staple", "password='{}' set"),
    ("ai_api_key", "sk-proj-pLIix6MEOLeMa61EqJomTEI1JEzO3joOj37HyVaQXekW9Lct", "called with {}"),
    (
        "ai_api_key",
        "sk-ant-api03-GTd7FguoV8FWnFbB0JxXujr4qqaaABvvLOzAxzXMcU1vsHiQMaRiNTN9Ox98whGcTZc1UWb5f"
        "xzpF7STG7nVLeAA",
        "x-api-key {} rejected",
    ),
    ("ai_api_key", "sk-B8fnvGNx6jvr7SIftRutlZfOjUStEkUdfMI7zcpVMw0qDPAj", "OPENAI_API_KEY {}"),
    ("google_api_key", "AIzauPnBIKpi99lSi0tcL21pffWQJEeNajnez0L", "maps?key={}&z=3"),
    ("gitlab_token", "glpat-NqjSc3vux9i53yyD3HyP", "cloned with {}"),
    ("npm_token", "npm_3MRJgN8ZGrBOUTp7tBqHtJvaYALubyNLOidO", "//registry.npmjs.org/:{}"),
    (
        "pypi_token",
        "pypi-AgEIcHlwaS5vcmcOvDwR6wMTrVFbLd9Rb9xqODtLMulxluWx2MqtYygX0bKRVitGoPZrpulRBPS",
        "twine upload -p {} dist/*",
    ),
    ("huggingface_token", "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", "pulled weights with {}"),
    (
        "sendgrid_key",
        "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",
        "mail sent via {}",
    ),
    (
        "digitalocean_token",
        "dop_v1_6d10f35970d13a48f1b763357840fc1878d1fa0141312f12fa5a2bcc9b86ad34",
        "doctl auth init -t {}",
    ),
    # Vault's service, batch and recovery tokens; Google's OAuth access tokens
    # and client secrets; Shopify's app tokens and secrets; age's secret keys;
    # a Twilio API key's SID beside its secret (helper-275).
    (
        "vault_token",
        "hvs.pVLOwQqTT6439DAfTyOCSZv95yU-lEz31pXpvQ3PxbCCdmIk08GGCc2o4ClYJoM0TSQawqqc9XMtR-qdEunpBIUc-Oa",
        "vault login {}",
    ),
    (
        "vault_token",
        "hvb.M6bwBDbhmbBvx_1Vkak-_qgxWV7ORhFpSY8RXwUllkTv92w_OSLGRPI1G06SqVc4ZsN_HBzHnMCbXOJo7DbGGP56"
        "XwuAoBJMDwldc_NMyEGLB0ECYcc3uHo98wu0MsHVuv-ulpeIGZQQ",
        "batch token {} issued",
    ),
    ("vault_token", "hvr.TPvXAqbVLqJJHLeJWbqEFcbI", "vault operator generate-root gave {}"),
    (
        "google_oauth",
        "ya29.pPVg2J4H5vr-3sFcAtGFd1plIG2yboBjyO8ElB5RqeT7RtbGq1sABhi0ZJFFcCY8nhxd_9y9SCU0DwP-jQPufYF"
        "rfNvNdOmYaNij5oXtqJ_z57uJ55IoYtG6",
        "gcloud printed {}",
    ),
    ("google_oauth", "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", "oauth client secret {} rotated"),
    ("shopify_token", "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", "X-Shopify-Access-Token {}"),
    ("shopify_token", "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", "app secret {}"),
    (
        "age_secret_key",
        "AGE-SECRET-KEY-1E83H3JY48R0U5K96ZAH97XD7YG050FF9X4Z7D66WUC5X3X63UAS8WUTR4Q",
        "# created: 2026-12-06\n{}\n",
    ),
    ("twilio_api_key", "SK2de860461af1ada0b417ef600daaa14c", "twilio key {} with its secret"),
    # A signed URL's signature (S3's, Cloud Storage's, an Azure SAS's) and
    # the response of Digest authentication, which a password can be
    # guessed against offline (helper-275).
    (
        "url_signature",
        "fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024",
        "GET https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date="
        "20261206T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature={}",
    ),
    (
        "url_signature",
        "8a2f0b4c1d3e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c",
        "https://storage.googleapis.com/b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256"
        "&X-Goog-Signature={}&X-Goog-Expires=600",
    ),
    (
        "url_signature",
        "Xb%2B8k3Lq%2FzR0vN6yB3dH5sG0aE2cU9iO7kXqYGh4%3D",
        "https://acct.blob.core.windows.net/c/b.txt?sv=2022-11-02&ss=b&srt=o&sp=r"
        "&se=2026-12-07T00:00:00Z&spr=https&sig={}",
    ),
    (
        "url_signature",
        "Qm9i%2Fc2lnbmF0dXJlK3NhcyE%3D",
        '<a href="https://acct.blob.core.windows.net/c?sig={}&amp;sp=r&amp;sv=2022-11-02">',
    ),
    (
        "url_signature",
        "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261206/us-east-1/s3/aws4_request,"
        " SignedHeaders=host;x-amz-date, Signature={}",
    ),
    (
        "digest_response",
        "6629fae49393a05397450978507c4ef1",
        'Authorization: Digest username="bob", realm="api", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c'
        '093", uri="/", qop=auth, nc=00000001, cnonce="0a4f113b", response="{}", opaque="5ccc069c"',
    ),
    # A raw `/` in the password: not valid in a URL, written so all the same.
    ("url_password", "pa/ss:w0rd", "postgres://admin:{}@db.internal/app"),
    ("url_password", "s3cr/et", "redis://:{}@cache:6379/0"),
    ("url_password", "pa/ss@w0rd", "postgres://admin:{}@db/app"),
    ("url_password", "xK9#mP/2qL", "redis://:{}@cache:6379/0"),  # helper-76
    ("url_password", "Zq8?v/N2x", "postgres://admin:{}@db/app"),
    # Ruby's and PHP's `=>`, command lines, JSON inside a string, serialized
    # headers, denied names beyond passwords and tokens (helper-129).
    (
        "secret_assignment",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        'params {{"aws_secret_access_key"=>"{}"}}',
    ),
    ("secret_assignment", "hunter2php", "$config = array('password' => '{}');"),
    ("secret_assignment", "hunter2cli", "mysql -u root --password {} db"),
    ("secret_assignment", "hunter2flag", "deploy --db-password={} --verbose"),
    ("secret_assignment", "hunter2json", 'body: "{{\\"password\\":\\"{}\\"}}"'),
    ("secret_assignment", "sess-8f3kq0aZ1x", 'form {{"user":"bob","session_id":"{}"}}'),
    ("secret_assignment", "otp-987654x", "login {{'otp': '{}'}}"),
    ("secret_assignment", "cvv-912x", 'card {{"cvv":"{}"}}'),
    ("secret_assignment", "pin-4821x", 'card {{"pin":"{}"}}'),
    ("secret_assignment", "s3cr3t-two", "export GITHUB_TOKEN_2={}"),
    ("high_entropy_assignment", "Zq8vN2xLmR4tY7wK1pS9dF3gH6jB0cXf", "{{:signing_seed => '{}'}}"),
    ("cookie_header", "sid=8f3kq0aZ1", 'headers={{"Cookie": "{}"}}'),
    ("cookie_header", "sid=9g4lr1bA2; HttpOnly", "headers={{'Set-Cookie': '{}'}}"),
]

ORDINARY = [
    "user alice@example.com signed in from 10.0.0.1",
    "request_id=550e8400-e29b-41d4-a716-446655440000 trace 4bf92f3577b34da6a3ce929d0e0e4736",
    "sha256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "the token count was 42 and the password policy changed",
    "uses basic authentication for the legacy portal",
    "see https://docs.example.com/guides/rotating-keys-safely for details",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0",
    "occurred at 2026-11-22T10:00:00Z in eu-west-1",
    # Near the token shapes, none of them.
    "trained with sk-learn-classifier-pipeline-for-risk-scoring-v2 and desk-12 booked",
    "cluster sk-prod-eu-west-1-cluster-control-plane-01 scaled",
    "see https://example.com:443/@alice and http://localhost:3000/users/@me/profile",
    "sso at https://sso.example.com:8443?next=/callback&login_hint=alice@example.com",
    "http://localhost:3000#/profile/@alice or http://[::1]:8080/users/@me",
    "mongodb://h1:27017,h2:27017/app?appName=svc@prod",
    # The same as PHP's json_encode writes them, every `/` as `\/` (helper-335).
    '{"u":"https:\\/\\/example.com:443\\/@alice","p":"http:\\/\\/localhost:3000#\\/@me",'
    '"m":"mongodb:\\/\\/h1:27017,h2:27017\\/app?appName=svc@prod"}',
    "package npm_config_cache set; hf_transfer enabled; SG.eu route",
    # Near the assignment rule: `pin` ending a word, counts, flags saying no secret.
    "spin: 1234 rpm, hairpin=tight, Spin=4821",
    "usage total_tokens=1500 prompt_tokens: 900 secrets: 3",
    "psql --no-password appdb; restore --password-file /etc/pgpass --token --verbose",
    # Prose naming a secret, no assignment (helper-133): the names added to the
    # assignment rule count only in a structured form, a flag's value only if
    # it is no lowercase word, `=>` only with a quote beside it.
    "Reset PIN: required by policy",
    "Login via OTP: sent to phone",
    "Session-ID: rotated after login",
    "value of cvv: missing",
    "Use --password when prompted",
    "see docs for --passphrase option",
    "see docs for --passphrase option. Or --token-file",
    "The user's password => changed",
    # Near the token shapes added by helper-275, none of them.
    "hvs.example.com answered; ya29.x; GOCSPX- is the prefix of a client secret",
    "shpat_ tokens expire; AGE-SECRET-KEY-1 starts a key; SKU SK-1234, TASK 12, DISK0",
    "order SK123 shipped; hash SKdeadbeef; SK2de860461af1ada0b417ef600daaa14cX",
    # `sig=` outside an Azure SAS, a signature named in prose, a `response=`
    # outside Digest authentication.
    "unsubscribe at https://mail.example.com/u?id=42&sig=4f2a9c0d1e2b3a4c&ref=footer",
    "presigned URLs carry X-Amz-Signature and X-Goog-Signature; sig=ok; sv=2 se=1",
    "Signature=valid; Signature=6629fae4 checked; SignedHeaders=host",
    'health check response="6629fae49393a05397450978507c4ef1"; Digest auth failed: '
    "response mismatch",
    # Near the token shapes after a percent-encoded or escaped character, none of them.
    "50%20off; 100%25 done; C:\\new\\tasks; \\u0022hvs.example.com\\u0022; %2Fsk-prod-eu-west-1-a",
    "%22SK123%22 shipped; \\nAKIA starts a key id; %20ghp_ and %3Dglpat- are prefixes; \\tAIza",
    # Near the header rules percent-encoded or after an escaped line break, none of them.
    "q=bearer%20token%20rotation&sort=new; Authorization%3A%20approved%20by%20lead",
    "h=Cookie%3A%20none; cookie%3Dconsent; Basic%20plan%20chosen; Cookie%3Aa%20b%3Dc",
    "\\nAuthorization: approved by lead\\nBearer token rotation\\nCookie: none",
    '{\\"Authorization\\": \\"approved by lead\\", \\"Cookie\\": \\"none\\"}',
    "{\\u0022Authorization\\u0022:\\u0022approved\\u0022,\\u0022status\\u0022:\\u0022ok\\u0022}",
    "q=%7B%22password%22%3A%20true%7D&next=https%3A%2F%2Fexample.com%2Fpassword%3Areset",
    "next=%2Fcb%3Fid%3D550e8400-e29b-41d4-a716-446655440000%26sha%3D9f86d081884c7d659a2feaa0c55ad015",
]

# Prose that speaks of a bearer or of Bearer authentication: the word after it
# is no credential (helper-335).
BEARER_PROSE = [
    "the bearer instrument is negotiable; payable to bearer whatsoever",
    "Bearer authentication is used. See the Bearer Authentication scheme",
    "BEARER AUTHENTICATION required for bearer-protected endpoints",
    "the card's bearer identified; Bearer tokens-based access",
    "q=what+is+bearer+authentication&page=2; q=bearer+tokens+vs+api+keys",
]
ORDINARY += BEARER_PROSE
# Prose a form writes, a path as PHP's json_encode writes it: not random (helper-346).
ORDINARY += [
    "q=bearer+token+rotation+2024",
    '{"file":"app\\/Http\\/Controllers\\/AuthController.php"}',
]


def _event(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "action": "secret.test",
        "severity": "info",
        "outcome": "success",
        "actor": {"type": "user", "id": "u1"},
    }
    body.update(fields)
    return body


def _places(text: str) -> list[dict[str, Any]]:
    """The body with `text` in each free-text place redaction must cover."""
    return [
        _event(description=text),
        _event(context={"user_agent": text}),
        _event(resource={"type": "doc", "name": text}),
        _event(actor={"type": "user", "id": "u1", "display_name": text}),
        _event(details={"note": text}),
        _event(details={"deep": [{"deeper": {"note": text}}]}),
        _event(changes=[{"field": "note", "before": "x", "after": text}]),
        _event(changes=[{"field": "config", "before": {"env": [text]}}]),
    ]


def test_the_corpus_is_large_enough() -> None:
    assert len(SECRETS) >= 30
    assert {rule for rule, _, _ in SECRETS} >= {
        "jwt",
        "bearer",
        "basic_auth",
        "aws_access_key",
        "github_token",
        "stripe_key",
        "slack_token",
        "pem_private_key",
        "high_entropy_assignment",
    }


@pytest.mark.parametrize(("rule", "secret", "template"), SECRETS)
def test_every_secret_is_removed_wherever_it_is(rule: str, secret: str, template: str) -> None:
    text = template.format(secret)
    for body in _places(text):
        redaction = REDACTOR.redact(body)
        stored = json.dumps(redaction.body)
        assert secret not in stored and json.dumps(secret)[1:-1] not in stored
        assert any(hit_rule == rule for _, hit_rule in redaction.hits), redaction.hits
        assert f"[REDACTED:{rule}]" in stored


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_left_alone(text: str) -> None:
    for body in _places(text):
        redaction = REDACTOR.redact(body)
        assert redaction.hits == [] and redaction.body is body


# Values an audit log is full of, none a secret (helper-346): paths, routes,
# user agents, ARNs, Kubernetes resources, SQL, commits, UUIDs, issue keys,
# object keys, subjects, dates, versions, class names, a form's prose. The
# random-value rule took 46 of 102 for secrets (a path has capitals, small
# letters and symbols, and entropy enough).
AUDIT_LOG_VALUES = [
    "app/Http/Controllers/AuthController.php",
    "app/Http/Middleware/VerifyCsrfToken.php",
    "src/main/java/com/acme/billing/InvoiceService.java",
    "resources/views/auth/passwords/reset.blade.php",
    "/var/log/nginx/access.log.2024-01-15.gz",
    "/etc/kubernetes/manifests/kube-apiserver.yaml",
    "C:/Users/Administrator/AppData/Local/Temp/setup.exe",
    "node_modules/@babel/core/lib/transformation/index.js",
    "spec/requests/api/v2/OrdersController_spec.rb",
    "tests/Feature/Auth/PasswordResetTest.php",
    "frontend/src/components/UserProfileCard.tsx",
    "/home/deploy/releases/20240115T103000Z/public",
    "/api/v2/organizations/8472/members/19283/roles",
    "/admin/users/42/impersonate?returnTo=/dashboard",
    "https://github.com/acme/platform/pull/4821/files",
    "https://console.aws.amazon.com/iam/home#/roles/DeployRole",
    "GET /api/v1/Invoices/INV-2024-000123/PdfExport",
    "/oauth/authorize?client_id=web-console&response_type=code",
    "https://acme.atlassian.net/browse/PLAT-4821",
    "/graphql?operationName=GetUserPermissions",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36",
    "python-requests/2.31.0",
    "aws-cli/2.15.10 Python/3.11.6 Linux/6.2.0-1017-aws exe/x86_64.ubuntu.22",
    "Go-http-client/2.0",
    "kube-probe/1.29",
    "Terraform/1.6.6 (+https://www.terraform.io) terraform-provider-aws/5.31.0",
    "okhttp/4.12.0",
    "arn:aws:iam::123456789012:role/OrganizationAccountAccessRole",
    "arn:aws:s3:::acme-prod-audit-logs/AWSLogs/123456789012/CloudTrail",
    "arn:aws:lambda:eu-west-1:123456789012:function:ProcessPaymentWebhook",
    "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "arn:aws:sts::123456789012:assumed-role/AdminRole/alice@example.com",
    "arn:aws:ecs:eu-central-1:123456789012:service/prod-cluster/billing-api",
    # A Secrets Manager secret's ARN names the secret (`:secret:` is its
    # resource type, not an assignment): the record of who read which secret.
    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf",
    "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:payments/StripeApiKey-Xy12Ab",
    # As ECS's `valueFrom` names a secret's JSON key: `:json-key:version-stage:version-id`.
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf:password::",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf::AWSPREVIOUS:",
    "deployment/billing-api-v2",
    "pod/api-server-7d9f8b6c5d-x2k9p",
    "billing-worker-5c8d7b9f4-h7tqz",
    "kube-system/coredns-5d78c9869d-8xk2m",
    "replicaset/frontend-6b9fd7c8d4",
    "cronjob/nightly-backup-28421760",
    "statefulset/postgres-primary-0",
    "ingress-nginx-controller-7c9b8f6d5-abcde",
    "configmap/app-config-9h2k7m8t5c",
    "ServiceAccount/github-actions-deployer",
    "SELECT id, email FROM users WHERE org_id = 42 LIMIT 100",
    "UPDATE accounts SET plan = 'Enterprise' WHERE id = 9182",
    "DELETE FROM sessions WHERE expires_at < now()",
    "ALTER TABLE invoices ADD COLUMN paidAt TIMESTAMPTZ",
    "INSERT INTO audit_events (tenant_id, seq) VALUES ($1, $2)",
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
    "4bf92f3577b34da6a3ce929d0e0e4736",
    "refs/heads/feature/PLAT-4821-rotate-Keys",
    "refs/tags/v2.14.0-rc.1",
    "origin/release/2024.01",
    "7f3c2a1e",
    "550e8400-e29b-41d4-a716-446655440000",
    "F47AC10B-58CC-4372-A567-0E02B2C3D479",
    "urn:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    "01HN3Y7Z4XK8M9PQRSTVWXYZAB",
    "cus_NffrFeUfNV2Hib",
    "i-0a1b2c3d4e5f67890",
    "sg-0123456789abcdef0",
    "vpc-0e9f8d7c6b5a43210",
    "PLAT-4821",
    "SEC-2024-0042",
    "INC0012345",
    "CHG0034567",
    "uploads/2024/01/15/Quarterly-Report-Q4-2023.pdf",
    "exports/tenant-8472/AuditExport_2024-01-15T10-30-00Z.csv.gz",
    "backups/postgres/prod-db-01/base_20240115_0300.tar.zst",
    "avatars/users/19283/profile_512x512.webp",
    "logs/AWSLogs/123456789012/elasticloadbalancing/eu-west-1/2024/01/15",
    "Re: [ACME-4821] Password reset requested for your account",
    "Your invoice INV-2024-000123 is ready",
    "Welcome to Acme Cloud, Alice!",
    "Action required: verify your email address",
    "2FA enabled on your account",
    "2024-01-15T10:30:00.000Z",
    "2024-01-15T10:30:00+05:30",
    "Mon, 15 Jan 2024 10:30:00 GMT",
    "v2.14.0-rc.1+build.20240115",
    "1.29.0-eks-5e0fdde",
    "20240115.103000.1234",
    "com.acme.auth.TokenRefreshService",
    "App\\Http\\Controllers\\Auth\\LoginController",
    "Illuminate.Auth.Events.Login",
    "org.springframework.security.web.FilterChainProxy",
    "System.UnauthorizedAccessException",
    "AuthenticationService#refreshAccessToken",
    "IAMRoleCredentialsProviderV2",
    "bearer+token+rotation+2024",
    "how+to+rotate+API+keys+in+2024",
    "Quarterly+Business+Review+Q4",
    "rotate-api-keys-before-2024-deadline",
    "Senior_Backend_Engineer_2024",
    "Dashboard-Widget-Layout-v3",
    "ip-10-0-12-34.eu-west-1.compute.internal",
    "prod-db-01.cluster-c9akciq32.eu-west-1.rds.amazonaws.com",
    "acme-Prod-ALB-1234567890.eu-west-1.elb.amazonaws.com",
]


@pytest.mark.parametrize("value", AUDIT_LOG_VALUES)
def test_values_an_audit_log_is_full_of_are_no_random_secret(value: str) -> None:
    forms = (
        json.dumps({"value": value}),
        json.dumps({"value": value}).replace("/", "\\/"),  # PHP's json_encode
        f"value={value}",
        f"value: {value}",
        f"?q={value}&page=2",
    )
    for text in forms:
        redaction = REDACTOR.redact(_event(description=text))
        assert redaction.hits == [], (text, redaction.body["description"])


@pytest.mark.parametrize(
    "text",
    [
        "read arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf password={}",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf, secret: {}",
        # Not a secret's ARN: no account, another service, a name before.
        "arn:aws:secretsmanager:eu-west-1::secret:{}",
        "arn:aws:ssm:eu-west-1:123456789012:secret:{}",
        "host:123456789012:secret:{}",
        # Text run on past the secret's name, where no name goes on (`|`,
        # `)`, `?`, `:`, `=`): a value assigned there is no name's part.
        "secretId=arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf"
        "|db_password={}|user=bob",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf)password:{}",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf?password={}",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf/password={}",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:=>{}",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf:password:{}",
    ],
)
def test_a_secret_beside_or_shaped_as_a_secrets_arn_is_replaced(text: str) -> None:
    redaction = REDACTOR.redact(_event(description=text.format("hunter2xyz")))
    assert "hunter2xyz" not in redaction.body["description"]
    assert [rule for _, rule in redaction.hits] == ["secret_assignment"]


def test_random_tokens_are_still_taken_for_secrets() -> None:
    """What the random-value rule keeps (values made of words, of one case)
    costs it few random tokens: base62, base64 and base64url drawn at random
    (seeded), of 20 and 32 characters."""
    draw = random.Random(346)
    for alphabet in (
        ascii_letters + digits,
        ascii_letters + digits + "+/",
        ascii_letters + digits + "-_",
    ):
        for size, share in ((20, 0.95), (32, 0.99)):
            tokens = ["".join(draw.choice(alphabet) for _ in range(size)) for _ in range(500)]
            found = sum(random_value(token) for token in tokens)
            assert found >= share * len(tokens), (alphabet, size, found)


def test_the_surrounding_text_is_kept() -> None:
    body = _event(description="Authorization: Bearer abcdefgh12345678 from ci")
    assert REDACTOR.redact(body).body["description"] == (
        "Authorization: Bearer [REDACTED:bearer] from ci"
    )


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "db_password",
        "userPassword",
        "client-secret",
        "GITHUB_TOKEN",
        "api_key",
        "apiKey",
        "private_key",
        "Authorization",
        "set-cookie",
        "aws_secret_access_key",
        "credentials",
        "session_id",
    ],
)
def test_values_under_denied_keys_are_replaced_whole(key: str) -> None:
    body = _event(details={"outer": {key: {"nested": ["anything", 1]}}, "kept": "visible"})
    redaction = REDACTOR.redact(body)
    assert redaction.body["details"] == {
        "outer": {key: "[REDACTED:field_name]"},
        "kept": "visible",
    }
    assert redaction.hits == [(f"details.outer.{key}", "field_name")]
    assert body["details"]["outer"][key] == {"nested": ["anything", 1]}  # the input is untouched


@pytest.mark.parametrize(
    "key",
    [
        "password_confirmation",
        "passwordConfirm",
        "password1",
        "passwordHash",
        "api_key_2",
        "encryption_key",
        "signing_key",
        # Endings about the secret were letters, not words (helper-129):
        # `android` ends in `id`, `admin` in `min`, `profile` in `file`.
        "API_KEY_ANDROID",
        "apiKeyAndroid",
        "secret_key_android",
        "password_admin",
        "db_password_sysadmin",
        "password_profile",
        "api_key_account",
        "password_wireless",
        # Numbered and plural names (helper-129).
        "token2",
        "secret_1",
        "GITHUB_TOKEN_2",
        "pin1",
        "pins",
        "cardPins",
        "signing_keys",
        "encryption_keys",
        "session_ids",
        "otp_codes",
        "passcodes",
        "Authorization:",
    ],
)
def test_keys_holding_a_secret_word_anywhere_are_denied(key: str) -> None:
    assert REDACTOR.redact(_event(details={key: "s3cret"})).hits == [
        (f"details.{key}", "field_name")
    ]


@pytest.mark.parametrize(
    "key",
    [
        "token_count",
        "api_key_id",
        "apikeyid",  # an ending about the secret right after its word
        "API_KEY_LAST4",
        "passwordless",
        "spin",  # `pin` is a word of its own only (helper-129)
        "hairpin",
        "LINCHPIN",
        "author",
        "description",
        "tokenizer",
        "password_changed_at",
        "password_policy",
        "passwordLength",
        "api_key_name",
        "api_key_prefix",
        "api_key_scopes",
        "password_expiry_days",
        "password_min_uppercase",
        "secretKeyRef",
        "private_key_path",
        "passwordless_method",
    ],
)
def test_keys_that_only_resemble_secrets_are_kept(key: str) -> None:
    body = _event(details={key: "value"})
    assert REDACTOR.redact(body).hits == []


def test_flags_and_counts_under_denied_keys_are_kept() -> None:
    details = {
        "is_secret": True,
        "password": False,
        "usage": {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22},
    }
    body = _event(details=details)
    assert REDACTOR.redact(body).body is body
    # A plural counts as `tokens` does; a key starting with a limit is one (helper-129).
    counts = {"api_keys": 2, "pins": 3, "max_token": 1000, "minPassword": 12}
    assert REDACTOR.redact(_event(details=counts)).hits == []
    # A number is still a secret under a key that is not a count: a PIN, a CVV.
    assert REDACTOR.redact(_event(details={"cvv": 123, "tokens": ["t1"]})).hits == [
        ("details.cvv", "field_name"),
        ("details.tokens", "field_name"),
    ]


@pytest.mark.parametrize(
    "key",
    [
        "otp",
        "totp_code",
        "mfaCode",
        "passcode",
        "pin",
        "card_pin",
        "recovery_codes",
        "backup-code",
        "mnemonic",
        "wallet_seed_phrase",
    ],
)
def test_one_time_codes_pins_and_recovery_phrases_are_secrets(key: str) -> None:
    assert REDACTOR.redact(_event(details={key: "492817"})).hits == [
        (f"details.{key}", "field_name")
    ]


@pytest.mark.parametrize("key", ["pin_attempts", "otp_sent_at", "shipping", "opinion", "topic"])
def test_names_near_those_are_kept(key: str) -> None:
    body = _event(details={key: "492817 tries"})
    assert REDACTOR.redact(body).hits == []


def _fullwidth(text: str) -> str:
    """`text` in fullwidth forms (U+FF01..), as East Asian keyboards type it."""
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


@pytest.mark.parametrize(
    "key",
    [
        _fullwidth("password"),
        "pass\u200bword",
        "api\u2010key",
        "db\u00a0password",
        _fullwidth("API_KEY"),
    ],
    ids=["fullwidth", "zero-width", "unicode-dash", "no-break-space", "fullwidth-upper"],
)
def test_a_denied_name_written_in_other_unicode_is_denied(key: str) -> None:
    assert REDACTOR.redact(_event(details={key: "hunter22"})).hits == [
        (f"details.{key}", "field_name")
    ]


def test_a_change_of_a_denied_field_follows_the_rule_of_details() -> None:
    """Counts and flags were kept under a key in `details` but replaced as the
    before/after of a change of the same field."""
    kept = _event(
        changes=[
            {"field": "limits.max_tokens", "before": 1024, "after": 2048},
            {"field": "mfa.password_required", "before": False, "after": True},
        ]
    )
    assert REDACTOR.redact(kept).body is kept
    hidden = REDACTOR.redact(_event(changes=[{"field": "db.password", "after": "hunter2"}]))
    assert hidden.hits == [("changes[0].after", "field_name")]


def test_the_value_of_a_name_value_pair_with_a_denied_name_is_replaced() -> None:
    env = [
        {"name": "DATABASE_PASSWORD", "value": "hunter2"},
        {"name": "HOME", "value": "/root"},
        {"key": "X-Api-Key", "value": "abcd1234"},
    ]
    redaction = REDACTOR.redact(_event(details={"env": env}))
    assert redaction.body["details"]["env"] == [
        {"name": "DATABASE_PASSWORD", "value": "[REDACTED:field_name]"},
        {"name": "HOME", "value": "/root"},
        {"key": "X-Api-Key", "value": "[REDACTED:field_name]"},
    ]


def test_pairs_are_found_whatever_the_case_of_their_keys_and_as_lists() -> None:
    """AWS's `{"Name": ..., "Value": ...}` and form fields kept as lists of
    pairs (`parse_qsl`) kept their secrets (helper-66)."""
    details = {
        "parameter": {"Name": "/prod/db/password", "Value": "hunter2", "Type": "SecureString"},
        "form": [["user", "bob"], ["password", "hunter3"], ["count", 2]],
        "tags": ["password", "reset"],  # two words, not a pair
    }
    redaction = REDACTOR.redact(_event(details=details))
    assert redaction.body["details"] == {
        "parameter": {
            "Name": "/prod/db/password",
            "Value": "[REDACTED:field_name]",
            "Type": "SecureString",
        },
        "form": [["user", "bob"], ["password", "[REDACTED:field_name]"], ["count", 2]],
        "tags": ["password", "reset"],
    }
    assert sorted(redaction.hits) == [
        ("details.form[1][1]", "field_name"),
        ("details.parameter.Value", "field_name"),
    ]


@pytest.mark.parametrize(
    "field",
    [
        "credentials.password.new",
        "api_keys[0]",
        "smtp/password/current",
        "password",
        # A quoted step was judged with its quotes, and named no secret (helper-129).
        "headers['Authorization']",
        'headers["Authorization"]',
        "env['GITHUB_TOKEN']",
        "card['cvv']",
        "user['pin']",
    ],
)
def test_a_change_under_a_secrets_name_anywhere_in_its_path_is_hidden(field: str) -> None:
    """`credentials.password.new` was judged by `new` alone and kept in clear;
    under `details` the same value is hidden with all beneath `password`."""
    body = _event(changes=[{"field": field, "before": "old-s3cret", "after": "hunter2"}])
    [change] = REDACTOR.redact(body).body["changes"]
    assert change == {
        "field": field,
        "before": "[REDACTED:field_name]",
        "after": "[REDACTED:field_name]",
    }
    kept = _event(changes=[{"field": "profile.password_hint_shown", "after": True}])
    assert REDACTOR.redact(kept).body is kept


def test_ids_lose_secrets_of_a_known_shape_and_keep_the_rest() -> None:
    body = _event(
        actor={"type": "service", "id": "ghp_16C7e42F292c6912E7710c838347Ae178B4a"},
        resource={"type": "database", "id": "postgres://admin:hunter2@db/app"},
    )
    redaction = REDACTOR.redact(body)
    assert redaction.body["actor"]["id"] == "[REDACTED:github_token]"
    assert redaction.body["resource"]["id"] == "postgres://admin:[REDACTED:url_password]@db/app"
    # `name=value` is how ids are written: only whole tokens are looked for.
    plain = _event(
        actor={"type": "user", "id": "user=alice"},
        resource={"type": "bucket", "id": "arn:aws:s3:::secret=Zq8vN2xLmR4tY7wK1pS9dF3gH6jB0cXe"},
    )
    assert REDACTOR.redact(plain).body is plain


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: approved by lead",  # a word, not a credential: no digit
        "Cookie: consent accepted on the banner",  # no name=value
    ],
)
def test_headers_named_in_prose_are_left_alone(text: str) -> None:
    body = _event(description=text)
    assert REDACTOR.redact(body).body is body


def test_an_access_key_id_as_a_resource_id_is_kept() -> None:
    """It names a key (CloudTrail logs it so); in text, beside its secret, it goes."""
    body = _event(resource={"type": "aws_access_key", "id": "AKIAIOSFODNN7EXAMPLE"})
    assert REDACTOR.redact(body).body is body


@pytest.mark.parametrize("tail", ["=", ""])
@pytest.mark.parametrize(
    "unit",
    [
        "a.",
        "a-",
        "ab=",
        "x:",
        "password ",
        "Authorization ",
        "p://a:",
        "eyJ-",
        "cookie:",
        "authorization:",
        "authorization: Bearer ",
        "sk-",
        "glpat-",
        "hvs.a",
        "ya29.",
        "shpat_0",
        "SK0",
        "AGE-SECRET-KEY-1Q",
        "GOCSPX-",
        "&sig=",
        "?sv=a&",
        "&sv=&sig=a",
        "?sv=a",
        ";se=a",
        "?sig=a",
        '<a key="pwd" ',
        '<a key="pwd" value="',
        '<a value="x" ',
        ' key="pwd"',
        '<a b="',
        "pwd_hash ",
        "pin_hash=",
        "pwd_hashed_",
        "<pin_hash>a</",
        "sig=a&",
        "X-Amz-Signature=a",
        'response="0',
        'Digest response="0123456789abcdef0123456789abcdef" ',
        "p://a:b/",
        "p://a:b/c",
        "--a-",
        "--password ",
        'password="\\',
        "pin=>",
        "pwd ",
        "pwd>a</",
        "<pwd a></",
        "pwd>a</b",
        "pwd%3D",
        "pwd%3Da%",
        "<pwd><![CDATA[",
        "pwd><![CDATA[a",
        "pwd><![CDATA[a]",
        "pwd ><![CDATA[]]",
        "<![CDATA[",
        '<e key="pwd">',
        '<e key="pwd">a',
        '<e key="pwd"><![CDATA[a',
        '<e key="pwd" ',
        "mysql -p",
        "mysql ",
        "mysql -pa ",
        "mysql -p'a",
        "mysql -p'",
        # After an encoded character, where a secret may start too.
        "%20sk-",
        "\\nglpat-",
        "\\fglpat-",
        # A `/` escaped as PHP's json_encode writes it, inside a secret.
        "p:\\/\\/a:",
        "bearer a\\/",
        "basic a\\/",
        "authorization: a\\/",
        "a=a\\/",
        "\\u0022hvs.a",
        "%3Dp://a:",
        "%22eyJ-",
        "bearer%20",
        "bearer+",
        "bearer+a%2F",
        "Authorization%3A%20",
        "authorization%3Dab1",
        "Authorization%3A+a%7E",
        "authorization%3A%20a%3A1",
        "Cookie%3A",
        "cookie%3Aa%2F",
        "Cookie%3Aa%3D",
        "\\nCookie: a=",
        "password:\\u0022",
        "pwd=\\u0027a\\",
        "\\u0022a\\u0022:\\u0022",
        'cookie:\\"a=\\',
        "<a key=\\u0022pwd\\u0022 value=\\u0022",
        "pwd%22%3A%22",
        "%22pin%22%3A%20",
        "a%3Da",
        "%3Fa%3D",
    ],
)
def test_redaction_time_grows_linearly_with_the_text(unit: str, tail: str) -> None:
    """A run of name characters with a `=` or `:` at its end made two rules
    rescan the run from every boundary inside it: 4 KiB took seconds; so did
    a run of JWT starts, of cookie headers without a `=`, of authorization
    headers without a digit (helper-66: 512 KiB held a process for minutes).
    The ratio of two lengths' times, each the best of seven taken in turn,
    tells linear (8x) from quadratic (64x) on a noisy machine. The times are
    this thread's CPU time, not the clock's: on a machine busy with other
    processes the clock also counts the slices the thread waited for a core
    (a few ms each), which a 30 ms run meets every try and a 1 ms run rarely
    does: sk- at 37x beside two busy processes, 8x alone. The work a
    quadratic rule does is CPU time all the same. The best of seven passes
    over a run slowed by what the CPU time still counts (caches shared with
    a busy neighbour, the start of a frequency change)."""
    texts = (unit * 500 + tail, unit * 4000 + tail)
    best = [math.inf, math.inf]
    for _ in range(7):
        for at, text in enumerate(texts):
            started = time.thread_time()
            REDACTOR.redact(_event(description=text))
            best[at] = min(best[at], time.thread_time() - started)
    short, long = best
    assert long < 24 * max(short, 1e-4)


# A run of one unit after what starts a rule's match, then what makes the match
# fail: (before the run, the run's unit, after it).
HOSTILE_RUNS = [
    ("--password", " ", "-x"),
    ("--password", "\n", "-x"),
    ("--password", "\t", ""),
    ("x --db-password", " ", "--"),
    ("--pin", " ", "x"),
    ("password", " ", "x"),
    ("pin:", " ", "x"),
    ("password=", " ", ""),
    ("Authorization: bearer", " ", ""),
    ("", "-", ""),
    ("", "--a", ""),
    ("--", "a-", ""),
    ("", "=", ""),
    ("", "=>", ""),
    ("", "\"'", ""),
    ("", '"', ""),
    ("", "'", ""),
    ("", "\\", ""),
    ("password:", '\\\\\\"', ""),
    ("", ":", ""),
    ("", "password_", ""),
    ("", "pinpin", ":"),
    ("", "p_a_s_s_", ""),
    ("--", "p-a-s-s-w-o-r-d-", ""),
    ("a://a:", "b/", ""),
    ("", "PIN: ", ""),
    ("", "pwd=abcd ", ""),
    ("", "4", ""),
    ("", "4 ", ""),
    ("", "4111-", ""),
    ("", "4111 1111 1111 111. ", ""),
    ("", "4111.", ""),
    ("ES28 ", "2100 ", ""),
    ("", "4111 1111 1111 1111x", ""),
    ("", "4111 ", ""),
    ("", "2024 ", ""),
    ("?sv=", "&a", ""),
    ("", "&sig=a", ""),
    ("?sig=a", "&", ""),
    ("", "?sv=a", ""),
    ("", "&amp;", "sig=a"),
    ("Digest ", 'response="0', ""),
    ("", "response = ", ""),
    ("", "X-Amz-Signature=", ""),
    ("", "Signature=", ""),
    ("", "Signature=0123456789abcdef", ""),
    ("<a", ' key="pwd"', ""),
    ("<a key='password' value='", "x", ""),
    ("Authorization%3A%20Token", "%20", "x"),
    ("Authorization%3A%20", "a%2B", ""),
    ("Authorization%3A+", "a%7E", ""),
    ("Cookie%3A", "%20", "a"),
    ("Cookie%3Aa", "%2F", ""),
    ("password=\\u0022", "\\", ""),
    ("", "pwd=\\u0022", ""),
    ("", "\\u0022a\\u0022:", ""),
    ("", "<a b='", ""),
]


def test_no_rule_backtracks_over_a_long_run() -> None:
    """A flag's `\\s+` and then a `\\s*` split a run of spaces N ways at each
    failed try: `--password`, 8,000 spaces and `-x` took 2.4 s, 64 KiB held
    the event loop for minutes (helper-133). Each text (8 KiB, then 64 KiB)
    must take less than 50 times a text of its length that every rule reads
    (one is tried again before it fails: a slow moment of the machine)."""

    def seconds(text: str) -> float:
        # This thread's CPU time, as in test_redaction_time_grows_linearly_with_the_text.
        started = time.thread_time()
        REDACTOR.redact(_event(description=text), hmac_key=b"k" * 32)
        for pattern in REDACTOR.patterns:  # each, where the prefilter passes over it too
            pattern.regex.search(text)
        return time.thread_time() - started

    def filled(before: str, unit: str, after: str, size: int) -> str:
        return before + unit * ((size - len(before) - len(after)) // len(unit)) + after

    for size in (8 * 1024, 64 * 1024):
        ordinary = filled("note: ", "the quick brown fox jumps over the lazy dog ", "", size)
        bound = 50 * min(seconds(ordinary) for _ in range(3))
        for before, unit, after in HOSTILE_RUNS:
            text = filled(before, unit, after, size)
            taken = seconds(text)
            if taken >= bound:
                taken = min(taken, seconds(text))
            assert taken < bound, (before, unit, after, size, taken, bound)


def test_many_replacements_a_later_rule_matches_too_grow_linearly() -> None:
    """Each match of a later rule was compared with every replacement before
    it: in HMAC mode, where later rules match inside the HMACs, 64 KiB of
    `pwd=abcd ` took 0.9 s, 256 KiB 13 s (an event as sent may be 512 KiB)."""

    def best_time(repeat: int) -> float:  # in CPU time, as the test above
        text = "pwd=abcd " * repeat
        times = []
        for _ in range(3):
            started = time.thread_time()
            REDACTOR.redact(_event(description=text), hmac_key=b"k" * 32)
            times.append(time.thread_time() - started)
        return min(times)

    short, long = best_time(500), best_time(8000)
    assert long < 48 * max(short, 1e-4)


def test_changes_of_a_denied_field_hide_both_sides() -> None:
    body = _event(
        changes=[
            {"field": "settings.smtp.password", "before": "old-pass", "after": "new-pass"},
            {"field": "api_token", "after": "t0k3n"},
            {"field": "password", "before": None, "after": ""},  # nothing to hide
            {"field": "role", "before": "viewer", "after": "admin"},
        ]
    )
    changes = REDACTOR.redact(body).body["changes"]
    assert changes == [
        {
            "field": "settings.smtp.password",
            "before": "[REDACTED:field_name]",
            "after": "[REDACTED:field_name]",
        },
        {"field": "api_token", "after": "[REDACTED:field_name]"},
        {"field": "password", "before": None, "after": ""},
        {"field": "role", "before": "viewer", "after": "admin"},
    ]


def test_api_key_actors_keep_their_last_four_characters() -> None:
    body = _event(actor={"type": "api_key", "id": "key_live_8f3b2a91c4"})
    redaction = REDACTOR.redact(body)
    assert redaction.body["actor"]["id"] == "****91c4"
    assert ("actor.id", "api_key_actor") in redaction.hits
    user = _event(actor={"type": "user", "id": "key_live_8f3b2a91c4"})
    assert REDACTOR.redact(user).body["actor"]["id"] == "key_live_8f3b2a91c4"


def test_a_role_loses_the_secrets_an_id_would() -> None:
    """`actor.roles` are names filtered on exactly, as ids are: a token sent
    as a role is replaced where it stands, each role in its place; an
    assignment in one (`token:read`) is a role's name, kept."""
    token = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
    roles = ["admin", f"ci {token}", "token:read", "secret=manage"]
    body = _event(actor={"type": "user", "id": "u1", "roles": roles})
    redaction = REDACTOR.redact(body)
    assert redaction.body["actor"]["roles"] == [
        "admin",
        "ci [REDACTED:github_token]",
        "token:read",
        "secret=manage",
    ]
    assert redaction.hits == [("actor.roles[1]", "github_token")]
    assert body["actor"]["roles"][1] == f"ci {token}"  # the caller's body is left as it was
    clean = _event(actor={"type": "user", "id": "u1", "roles": ["admin", "token:read"]})
    assert REDACTOR.redact(clean).hits == []


@pytest.mark.parametrize("hmac_key", [None, b"k" * 32])
def test_a_role_its_secrets_would_make_too_long_is_replaced_whole(hmac_key: bytes | None) -> None:
    """A role may be 128 characters; two HMACs of 76 in one would make it
    longer than a role may be sent."""
    role = "a://:1@/ b://:2@/ " * 3  # 54 characters: 6 replacements of 23 make 186
    body = _event(actor={"type": "user", "id": "u1", "roles": [role, "ok"]})
    stored = REDACTOR.redact(body, hmac_key=hmac_key).body["actor"]["roles"]
    assert stored == [
        "[REDACTED:id_of_secrets]" if hmac_key is None else hmac_token(hmac_key, role),
        "ok",
    ]


def test_roles_redacted_alike_are_numbered_so_the_record_validates_again() -> None:
    """Two tokens sent as roles both read `[REDACTED:github_token]`: a
    record validation refuses (a role given twice), so an export of it was
    refused by `sealtrail import`. Numbered as keys are (` (2)`), past a
    number a role sent holds already; a role its number would make too long
    is replaced whole, then numbered."""
    token_a = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
    token_b = "ghp_0123456789abcdefABCDEF0123456789abcd"
    near_the_limit = ["x" * 97 + " a://:1@/", "x" * 97 + " a://:2@/"]  # 128 redacted
    roles = [token_a, token_b, "[REDACTED:github_token] (2)", *near_the_limit]
    body = _event(actor={"type": "user", "id": "u1", "roles": roles})
    stored = REDACTOR.redact(body).body["actor"]["roles"]
    assert stored == [
        "[REDACTED:github_token]",
        "[REDACTED:github_token] (3)",
        "[REDACTED:github_token] (2)",
        "x" * 97 + " a://:[REDACTED:url_password]@/",
        "[REDACTED:id_of_secrets]",
    ]
    draft = EventDraft(action="secret.test", actor_id="u1", actor_roles=stored)
    assert validate_event(draft, now=datetime.now(UTC)).body["actor"]["roles"] == stored


@pytest.mark.parametrize("hmac_key", [None, b"k" * 32])
def test_an_id_its_secrets_would_make_too_long_is_replaced_whole(hmac_key: bytes | None) -> None:
    """32 URL passwords in a 256-character id became 32 HMACs of 76
    characters: an id of 2,600, an index entry over a page, and a batch the
    database refused whole (helper-63)."""
    resource_id = "".join(f"a://:{n:02}@/" for n in range(32))[:256]
    redaction = REDACTOR.redact(
        _event(resource={"type": "db", "id": resource_id}), hmac_key=hmac_key
    )
    stored = redaction.body["resource"]["id"]
    assert stored == (
        "[REDACTED:id_of_secrets]" if hmac_key is None else hmac_token(hmac_key, resource_id)
    )
    assert len(stored) <= 256


def test_hmac_mode_correlates_equal_secrets_under_one_tenant_key() -> None:
    key_a, key_b = b"a" * 32, b"b" * 32
    body = _event(
        description="password=hunter22 then password=hunter22",
        details={"password": "hunter22", "api_key": {"id": 7}},
    )
    first = REDACTOR.redact(body, hmac_key=key_a).body
    again = REDACTOR.redact(body, hmac_key=key_a).body
    other = REDACTOR.redact(body, hmac_key=key_b).body
    expected = HMAC_PREFIX + hmac.new(key_a, b"hunter22", hashlib.sha256).hexdigest()
    assert first == again
    assert first["details"]["password"] == expected
    assert first["description"] == f"password={expected} then password={expected}"
    assert first["details"]["api_key"] == hmac_token(key_a, {"id": 7})
    assert other["details"]["password"] != expected
    assert "hunter22" not in json.dumps(first)


def test_rules_are_configurable() -> None:
    custom = REDACTOR.with_rules(
        field_names=["ssn"],
        patterns=[ValuePattern("employee_badge", re.compile(r"\bBADGE-\d{6}\b"))],
    )
    body = _event(description="badge BADGE-123456 used", details={"SSN": "123-45-6789"})
    redacted = custom.redact(body).body
    assert redacted["description"] == "badge [REDACTED:employee_badge] used"
    assert redacted["details"] == {"SSN": "[REDACTED:field_name]"}
    assert REDACTOR.redact(body).hits == []  # the defaults are unchanged


def test_the_prefilter_lets_every_secret_through() -> None:
    assert REDACTOR._any.anchored is not None
    assert REDACTOR._any.unanchored == (PAYMENT_CARD.regex,)  # the one without an anchor
    for _, secret, template in SECRETS:
        assert REDACTOR.may_hold_secret(template.format(secret))
    custom = REDACTOR.with_rules(patterns=[ValuePattern("badge", re.compile(r"BADGE-\d+"))])
    assert custom.may_hold_secret("BADGE-12") and not REDACTOR.may_hold_secret("BADGE-12")


def test_a_secret_in_a_key_is_replaced_and_keys_stay_apart() -> None:
    """A key is the caller's text too: `{"ghp_…": "repo"}` kept the token
    until now. Two keys replaced alike stay two keys."""
    token_a = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
    token_b = "ghp_16C7e42F292c6912E7710c838347Ae178B4b"
    body = _event(
        details={"grants": {token_a: "repo", token_b: "admin:org", "plain": "kept"}},
        changes=[{"field": "scopes", "after": {f"password={token_a[4:]}": True}}],
    )
    redaction = REDACTOR.redact(body)
    stored = json.dumps(redaction.body)
    assert token_a not in stored and token_b not in stored and token_a[4:] not in stored
    assert redaction.body["details"]["grants"] == {
        "[REDACTED:github_token]": "repo",
        "[REDACTED:github_token] (2)": "admin:org",
        "plain": "kept",
    }
    assert redaction.body["changes"][0]["after"] == {"password=[REDACTED:secret_assignment]": True}
    assert redaction.hits == [  # keys holding brackets are written in backticks
        ("details.grants.`[REDACTED:github_token]`", "github_token"),
        ("details.grants.`[REDACTED:github_token] (2)`", "github_token"),
        ("changes[0].after.`password=[REDACTED:secret_assignment]`", "secret_assignment"),
    ]
    pairs = REDACTOR.redact(_event(details={"form": [[f"{token_a}_token", "x"]]})).body
    assert pairs["details"]["form"] == [
        ["[REDACTED:github_token]_token", "[REDACTED:field_name]"]
    ]  # a pair's name is text too, even when its value is hidden (helper-75)
    hashed = REDACTOR.redact(body, hmac_key=b"k" * 32).body["details"]["grants"]
    assert set(hashed) == {
        hmac_token(b"k" * 32, token_a),
        hmac_token(b"k" * 32, token_b),
        "plain",
    }


@pytest.mark.parametrize(
    "key", ["pass", "PASS", "db_pass", "smtpPass", "DB_PASS2", "pw", "root-pw", "userPW"]
)
def test_pass_and_pw_as_a_keys_last_word_hide_a_password(key: str) -> None:
    body = _event(
        details={key: "hunter2!"},
        changes=[{"field": f"smtp.{key}", "after": "s3cret"}],
    )
    assert REDACTOR.redact(body).hits == [
        (f"details.{key}", "field_name"),
        ("changes[0].after", "field_name"),
    ]


def test_pass_alone_hides_any_value_and_a_longer_name_only_a_passwords_shape() -> None:
    """`pass` alone is a password as `pwd` is; `first_pass` or `boarding_pass`
    name other things, and keep what is not shaped like one (helper-75)."""
    kept = {
        "first_pass": "completed",
        "tests_pass": 120,
        "boarding_pass": "BA117 seat 4C",
        "max_pw": 150,
        "byPass": "maintenance",
        "guest_pass": "alice@example.com",
        "day_pass": "2026-11-22",
        # More of them (helper-76): ids, ratios, dates and times, UUIDs.
        "visitor_pass": "VP-00123",
        "suite_pass": "120/120",
        "season_pass": "2026/11/22",
        "last_pass": "10:32:05",
        "ticket_pass": "550e8400-e29b-41d4-a716-446655440000",
        "hall_pass": "N/A",
    }
    assert REDACTOR.redact(_event(details=kept)).hits == []
    assert REDACTOR.redact(_event(details={"pass": "letmein", "PW": "1234"})).hits == [
        ("details.pass", "field_name"),
        ("details.PW", "field_name"),
    ]
    counts = _event(details={"pass": 120, "fail": 2, "form": [["pass", 12], ["fail", 0]]})
    assert REDACTOR.redact(counts).hits == []


@pytest.mark.parametrize(
    "key", ["bypass", "BYPASS", "compass", "passes", "pass_count", "passed", "pwm", "oauth"]
)
def test_words_ending_in_those_names_are_kept(key: str) -> None:
    assert REDACTOR.redact(_event(details={key: "hunter2:x"})).hits == []


def test_auth_hides_a_credential_and_keeps_a_methods_name() -> None:
    hidden = {
        "auth": "deploy:s3cret-99",
        "basic_auth": "dXNlcjpodW50ZXIy",
        "proxyAuth": "it@acme.io:hunter2",
        "token_auth": "Zq8vN2xLmR4tY7wK1pS9",
    }
    kept = {
        "sso": {"auth": "saml", "method_auth": "password", "kind_auth": "oauth2"},
        "methods": {"auth": "HMAC-SHA256", "mtls_auth": "x509", "saml_auth": "SAML 2.0"},
        "last_auth": "2026-11-22T10:00:00Z",
        "user_auth": "alice@example.com",
        # Methods' names (helper-76): Okta's base64 decodes to bytes with a `:`.
        "idp": {"auth": "Okta", "sso_auth": "OneLogin", "aws_auth": "aws:sigv4"},
        "login": {"auth": "oidc:google", "url_auth": "https://login.example.com/authorize"},
        "author": "alice:1",
    }
    body = _event(
        details={
            **hidden,
            **kept,
            "upstream": {"auth": {"user": "bot", "token": "t0k3n"}},
            "env": [
                {"name": "SMTP_AUTH", "value": "mailer:changeme"},
                {"name": "AUTH", "value": "sso"},
            ],
        },
        changes=[
            {"field": "smtp.auth", "before": "plain", "after": "mailer:changeme"},
            {"field": "auth", "after": {"api_key": "k3y"}},
            {"field": "auth.password", "after": "correct-horse-battery"},
            {"field": "basic_auth.pin", "before": 4821},
        ],
    )
    redacted = REDACTOR.redact(body).body
    assert redacted["details"] == {
        **dict.fromkeys(hidden, "[REDACTED:field_name]"),
        **kept,
        # An object under `auth` is looked into, not hidden whole.
        "upstream": {"auth": {"user": "bot", "token": "[REDACTED:field_name]"}},
        "env": [
            {"name": "SMTP_AUTH", "value": "[REDACTED:field_name]"},
            {"name": "AUTH", "value": "sso"},
        ],
    }
    assert redacted["changes"] == [
        {"field": "smtp.auth", "before": "plain", "after": "[REDACTED:field_name]"},
        {"field": "auth", "after": {"api_key": "[REDACTED:field_name]"}},
        # A step that names a secret whatever its value rules over `auth` (helper-75).
        {"field": "auth.password", "after": "[REDACTED:field_name]"},
        {"field": "basic_auth.pin", "before": "[REDACTED:field_name]"},
    ]
    assert REDACTOR.redact(_event(details=kept)).hits == []


def test_the_built_in_anchors_keep_the_prefilters_fast_path() -> None:
    """Python's engine skips to where one of an alternation's first characters
    stands only when every alternative starts with a literal; one that does
    not (a class, a group, `(?i:...)`) made every string's scan 4x slower."""
    from re import _constants, _parser

    for prefilter in (REDACTOR._any, REDACTOR._any_in_id):
        assert prefilter.anchored is not None
        ((op, (_, alternatives)),) = list(_parser.parse(prefilter.anchored.pattern))
        assert op is _constants.BRANCH
        for alternative in alternatives:
            assert alternative[0][0] is _constants.LITERAL, alternative


def test_a_redactor_remembers_a_bounded_number_of_short_keys() -> None:
    redactor = Redactor()
    for n in range(5000):
        redactor.redact(_event(details={f"key_{n}": "value"}))
    redactor.redact(_event(details={"k" * 129: "value"}))
    assert 0 < len(redactor._verdicts) <= 4096
    assert "k" * 129 not in redactor._verdicts
    assert redactor.redact(_event(details={"db_pass": "hunter2"})).hits  # still judged alike


def test_a_redactor_remembers_a_bounded_number_of_short_clean_texts_and_no_secret() -> None:
    """A text found clean is not scanned again; one that may hold a secret is
    never remembered, so a repeated secret is redacted every time."""
    redactor = Redactor()
    secret = "curl -u admin:hunter2@example.com https://user:s3cr3t-pass@db.example/x"
    for _ in range(2):
        assert redactor.redact(_event(description=secret)).hits
    assert secret not in redactor._clean_texts
    for n in range(5000):
        redactor.redact(_event(description=f"Shared document {n}"))
    redactor.redact(_event(description="d" * 1025))
    assert 0 < len(redactor._clean_texts) <= 4096
    assert "d" * 1025 not in redactor._clean_texts
    assert "Shared document 4999" in redactor._clean_texts
    assert redactor.redact(_event(description=secret)).hits  # still judged alike


def test_numbering_keys_that_replace_alike_grows_linearly() -> None:
    """N keys replaced by the same text were numbered by trying each number
    taken: N^2 steps, 45 s for 16,000 keys in one 300 KB event (helper-75)."""

    def best_time(keys: int) -> float:  # in CPU time (test_redaction_time_grows_linearly...)
        details = {f"pwd={n:08d}": 1 for n in range(keys)}
        times = []
        for _ in range(5):
            started = time.thread_time()
            redacted = REDACTOR.redact(_event(details=details)).body["details"]
            times.append(time.thread_time() - started)
        assert len(redacted) == keys and "pwd=[REDACTED:secret_assignment] (500)" in redacted
        return min(times)

    short, long = best_time(500), best_time(4000)
    assert long < 24 * max(short, 1e-4)


@pytest.mark.parametrize("word", ["bearer", "basic", "authorization", "cookie"])
def test_an_anchor_in_either_case_matches_what_the_case_insensitive_rule_does(word: str) -> None:
    """`(?i)` takes the long s (U+017F) for `s`, the Kelvin sign for `k`, the
    dotted and dotless i for `i`: an anchor that missed them let "BASIC" with
    a long s and credentials after it past the prefilter (helper-75)."""
    anchor = re.compile(either_case(word))
    for letter in set(word):
        folds = [
            chr(c) for c in range(0x10000) if re.fullmatch(f"(?i){letter}", chr(c)) is not None
        ]
        for fold in folds:
            variant = word.replace(letter, fold)
            assert anchor.fullmatch(variant) is not None, variant
    assert REDACTOR.redact(_event(description="BA\u017fIC dXNlcjpodW50ZXIy")).hits == [
        ("description", "basic_auth")
    ]


@pytest.mark.parametrize("hmac_key", [None, b"k" * 32])
def test_free_text_longer_than_an_id_keeps_all_but_its_secrets(hmac_key: bytes | None) -> None:
    """The rule for ids too long once their secrets are replaced wiped every
    description, name or user agent over 256 characters that held a secret
    (helper-76)."""
    text = "deployed release 2026.11 to the eu fleet; " * 6 + "db postgres://admin:hunter2@db/app"
    redacted = REDACTOR.redact(_event(description=text), hmac_key=hmac_key).body["description"]
    assert redacted.startswith(text[:200]) and "hunter2" not in redacted


@pytest.mark.parametrize("hmac_key", [None, b"k" * 32])
def test_a_later_rule_leaves_an_earlier_rules_replacement_alone(hmac_key: bytes | None) -> None:
    """An operator's `\\d{6,}` rewrote the digits of a token's HMAC (14 tokens
    in 20, helper-129), and one matching `REDACTED` a replacement's text: the
    value stored was no HMAC an investigator could find."""
    custom = REDACTOR.with_rules(
        patterns=[
            ValuePattern("account_no", re.compile(r"\d{6,}")),
            ValuePattern("shouting", re.compile(r"\b[A-Z]{8}\b")),
        ]
    )

    def replaced(secret: str, rule: str) -> str:
        return f"[REDACTED:{rule}]" if hmac_key is None else hmac_token(hmac_key, secret)

    for n in range(20):
        token = f"ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7{n:02d}"
        text = f"pushed with {token} to account 12345678"
        redacted = custom.redact(_event(description=text), hmac_key=hmac_key).body
        assert redacted["description"] == (
            f"pushed with {replaced(token, 'github_token')}"
            f" to account {replaced('12345678', 'account_no')}"
        )


@pytest.mark.parametrize("hmac_key", [None, b"k" * 32])
def test_redacting_a_redacted_text_again_changes_nothing(hmac_key: bytes | None) -> None:
    """A search for an HMAC runs the redactor over the filter's text: the
    bearer rule read `hmac-sha256` (to the `:`) as a credential and wrote
    `hmac-sha256:<new>:<old>`, and an operator's `\\d{6,}` rewrote an HMAC's
    digits (helper-133). A replacement in the text is left as it is."""
    custom = REDACTOR.with_rules(patterns=[ValuePattern("account_no", re.compile(r"\d{6,}"))])
    texts = [
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl",
        "pushed with ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8 to account 12345678",
        'mysql --password hunter22 -e "x"; PIN: 4821; {"otp":"987654"}',
        "postgres://admin:s3cr3tP4ss@db/app and password='correct horse'",
    ]
    for text in texts:
        once = custom.redact(_event(description=text), hmac_key=hmac_key).body
        assert once["description"] != text
        twice = custom.redact(once, hmac_key=hmac_key)
        assert twice.body["description"] == once["description"]
        assert twice.hits == []


def test_a_quoted_value_is_read_past_its_escaped_quotes() -> None:
    """`password="ab\\"cd"` hid `ab\\` and kept `cd"` (helper-129)."""
    body = _event(description=r"""set password="ab\"cd\\" then PIN: 'x\'y' rest""")
    hidden = "[REDACTED:secret_assignment]"
    assert REDACTOR.redact(body).body["description"] == (
        f"""set password="{hidden}" then PIN: '{hidden}' rest"""
    )
    # JSON inside a string: the value ends at its escaped quote, and an empty
    # one holds nothing (the rest of the object is no value of it).
    escaped = _event(description=r'body "{\"pwd\":\"hunter2\",\"user\":\"bob\"}"')
    assert REDACTOR.redact(escaped).body["description"] == (
        rf'body "{{\"pwd\":\"{hidden}\",\"user\":\"bob\"}}"'
    )
    empty = _event(description=r'body "{\"password\":\"\",\"user\":\"bob\"}"')
    assert REDACTOR.redact(empty).body is empty


def test_the_argument_after_a_secret_flag_in_a_list_is_hidden() -> None:
    """`["mysql", "--password", "hunter2"]` kept the password: each item was
    read alone, and a flag alone holds nothing (helper-129)."""
    argv = ["mysql", "--password", "hunter2", "--db-token", "t0k3n", "--max-tokens", "1000"]
    kept = ["--token", "--verbose", "--no-password", "app", "--password-file", "/etc/pw"]
    redaction = REDACTOR.redact(
        _event(
            details={"argv": [*argv, *kept, "--password=s3cr3t", "app"]},
            changes=[{"field": "cmd", "after": argv}],
        )
    )
    hidden = "[REDACTED:secret_assignment]"
    redacted = ["mysql", "--password", hidden, "--db-token", hidden, "--max-tokens", "1000"]
    # A flag holding its value is text, and the item after it is not its value.
    held = [f"--password={hidden}", "app"]
    assert redaction.body["details"]["argv"] == [*redacted, *kept, *held]
    assert redaction.body["changes"][0]["after"] == redacted
    assert redaction.hits == [
        ("details.argv[2]", "secret_assignment"),
        ("details.argv[4]", "secret_assignment"),
        ("details.argv[13]", "secret_assignment"),
        ("changes[0].after[2]", "secret_assignment"),
        ("changes[0].after[4]", "secret_assignment"),
    ]
    plain = _event(details={"argv": ["ls", "--color", "auto"]})
    assert REDACTOR.redact(plain).body is plain


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        # A form's `+` for a space, or `%20`, before a credential whose `/`,
        # `+` and `=` are percent-encoded: it was cut at its first `%2F` or
        # `%2B`, or not found at all after `+` (helper-335).
        ("h=X-Auth%3A+Bearer+kR7Zp2vQ9%2FwX4t%2BLmN%3D%3D&x=1", "h=X-Auth%3A+Bearer+#&x=1"),
        ("h=X-Auth%3A%20Bearer%20kR7Zp2vQ9%2FwX4t%2BLmN%3D&x=1", "h=X-Auth%3A%20Bearer%20#&x=1"),
        ("h=X-Auth%3A+Bearer+mF_9.B5f-4.1JqM+from+ci", "h=X-Auth%3A+Bearer+#+from+ci"),
        # A raw `+` after a raw space is base64's, as before.
        ("Authorization: Bearer kR7Zp2vQ9+wX4t/LmN== from ci", "Authorization: Bearer # from ci"),
        # After a raw space, a token percent-encoded into its header (as
        # `encodeURIComponent(token)` writes it): cut at its first `%2F` or
        # `%2B`, the rest stored; one whose first part before it was shorter
        # than 8 characters was stored whole. A Basic credential so written,
        # or a Token one in an Authorization header, was hidden whole.
        ("Authorization: Bearer kR7Zp2vQ9%2FwX4t%2BLmN%3D%3D", "Authorization: Bearer #"),
        (
            "curl -H 'X-Upstream: Bearer AbCd%2F1234EfGhIjKl'",
            "curl -H 'X-Upstream: Bearer #'",
        ),
        ("sent Bearer kR7Zp2vQ9%2BwX4t from ci", "sent Bearer # from ci"),
        # An encoded space or comma still ends it, as a raw one does.
        ("Bearer kR7Zp2vQ9%2FwX4t%2C%20realm", "Bearer #%2C%20realm"),
    ],
)
def test_a_bearer_credential_encoded_as_forms_and_urls_write_it_is_hidden_whole(
    text: str, redacted: str
) -> None:
    body = REDACTOR.redact(_event(details={"note": text})).body
    assert body["details"]["note"] == redacted.replace("#", "[REDACTED:bearer]")


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        # A Basic credential percent-encoded as a URL's query or a form writes
        # it, its `+`, `/` and `=` as `%2B`, `%2F`, `%3D`: it was cut at its
        # first `%2B` or `%2F`, the rest stored (helper-346).
        ("proxy=Basic%20Y2ktZGVwbG95OnMzY3I%2BdD9wd35%2B&x=1", "proxy=Basic%20#&x=1"),
        (
            "h=X-Proxy%3A%20Basic%20ZGVwbG95OnA%2Fc3M%2BPncwcmQ%3D&x=1",
            "h=X-Proxy%3A%20Basic%20#&x=1",
        ),
        ("q=%22Basic%20b3BzOn5%2Bfj9wdz4%2BeA%3D%3D%22", "q=%22Basic%20#%22"),
        # After a form's `+` for a space; the `+` after it is the form's too.
        (
            "sent X-Proxy%3A+Basic+ZGVwbG95OnA%2Fc3M%2BPncwcmQ%3D+from+ci",
            "sent X-Proxy%3A+Basic+#+from+ci",
        ),
        ("sent X-Proxy%3A+Basic+dXNlcjpodW50ZXIy+from+ci", "sent X-Proxy%3A+Basic+#+from+ci"),
        # A raw `+` after `%20` is base64's, as after a raw space.
        ("proxy=Basic%20Y2ktZGVwbG95OnMzY3I+dD9wd35+&x=1", "proxy=Basic%20#&x=1"),
    ],
)
def test_a_basic_credential_encoded_as_forms_and_urls_write_it_is_hidden_whole(
    text: str, redacted: str
) -> None:
    body = REDACTOR.redact(_event(details={"note": text})).body
    assert body["details"]["note"] == redacted.replace("#", "[REDACTED:basic_auth]")


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        # Firebase's legacy server key (`key=AAAA…:APA91b…`): its `:` encoded
        # cut it there, and the key's larger part was stored (helper-335).
        (
            "h=Authorization%3A%20key%3DAAAAkR7Zp2v%3AAPA91bHun4MxP5egoKMwt2KZ&x=1",
            "h=Authorization%3A%20#&x=1",
        ),
        # After a form's `+` for a space; a raw `+` is taken for base64's, to the `&`.
        (
            "h=Authorization%3A+Token+user%3Apass1234%21+ci&x=1",
            "h=Authorization%3A+Token+#&x=1",
        ),
        # Ended by an encoded space, quote, `,`, `;` or line break, as a raw one is.
        (
            "h=Authorization%3A%20Token%20ab%3A12345678%2C%20realm%3Dapi",
            "h=Authorization%3A%20Token%20#%2C%20realm%3Dapi",
        ),
        (
            "q=%7B%22authorization%22%3A%22Token%20ab%3A12345678%22%7D",
            "q=%7B%22authorization%22%3A%22Token%20#%22%7D",
        ),
        (
            "h=Authorization%3A%20Token%20ab%3A12345678%0D%0AHost%3A%20x",
            "h=Authorization%3A%20Token%20#%0D%0AHost%3A%20x",
        ),
        ("h=Authorization%3A%20Token%20ab%3A12345678%3Bx", "h=Authorization%3A%20Token%20#%3Bx"),
    ],
)
def test_a_percent_encoded_authorization_credential_is_hidden_to_its_end(
    text: str, redacted: str
) -> None:
    body = REDACTOR.redact(_event(details={"note": text})).body
    assert body["details"]["note"] == redacted.replace("#", "[REDACTED:authorization_header]")


HIDDEN = "[REDACTED:secret_assignment]"


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        # `#` stands for HIDDEN.
        (
            '{"pin":"4321","cvv":"123","otp":"987654","session_id":"abcdef"}',
            '{"pin":"#","cvv":"#","otp":"#","session_id":"#"}',
        ),
        (r'body "{\"pin\":\"4321\"}"', r'body "{\"pin\":\"#\"}"'),
        ("pin=4321, Session-ID = abcdef", "pin=#, Session-ID = #"),
        ("otp: 987654, PIN: 4821.", "otp: #, PIN: #"),
        ("PIN: '4821' or \"x y\"", "PIN: '#' or \"x y\""),
        (
            "$a = array('password' => 'hunter2', :pin => '1234')",
            "$a = array('password' => '#', :pin => '#')",
        ),
        ("--password hunter2 --password Hunter --otp 987654", "--password # --password # --otp #"),
        (
            "--password 'correct horse' --db-password=hunter --pin=1234",
            "--password '#' --db-password=# --pin=#",
        ),
        ("export GITHUB_TOKEN_2=s3cr3t-two", "export GITHUB_TOKEN_2=#"),
        # The names of old keep their `name: value` in prose.
        ("Password: required, client_secret: abcdefgh", "Password: #, client_secret: #"),
    ],
)
def test_a_secret_assigned_in_a_structured_form_is_hidden(text: str, redacted: str) -> None:
    """Each form the prose rules keep (`PIN: required`, `--password when`)
    still hides a secret written as code, JSON, a command line does."""
    body = _event(description=text)
    assert REDACTOR.redact(body).body["description"] == redacted.replace("#", HIDDEN)


def test_an_operators_name_in_prose_is_kept() -> None:
    custom = REDACTOR.with_rules(field_names=["ssn"])
    body = _event(description="SSN: pending review; ssn: 123456789")
    assert custom.redact(body).body["description"] == f"SSN: pending review; ssn: {HIDDEN}"


def test_an_operators_field_names_are_looked_for_in_text() -> None:
    custom = REDACTOR.with_rules(field_names=["ssn"])
    body = _event(description='applicant {"ssn": "123-45-6789"}; SSN=987-65-4321')
    assert custom.redact(body).body["description"] == (
        'applicant {"ssn": "[REDACTED:secret_assignment]"}; SSN=[REDACTED:secret_assignment]'
    )
    assert REDACTOR.redact(body).body is body


def test_an_operators_field_names_ending_in_a_digit_hide_their_values() -> None:
    """A key is compared without what follows its last letter (`token2` is a
    `token`): `pkcs12`, `p12` and `ed25519`, compared so, never denied a key,
    while the same names were redacted in text (helper-156)."""
    custom = REDACTOR.with_rules(field_names=["pkcs12", "p12", "ed25519"])
    body = _event(
        details={
            "PKCS12": "MIIKYgIBAzCCCi",
            "cert_p12": "MIIKYgIBAzCC",
            "ed25519": "AAAAC3NzaC1lZDI1NTE5",
            "env": [{"name": "TLS_PKCS12", "value": "MIIKYgIBAzCCCi"}],
            "p12_count": 2,
        },
        changes=[{"field": "tls.pkcs12", "before": None, "after": "MIIKYgIBAzCCCi"}],
    )
    redacted = custom.redact(body).body
    hidden = "[REDACTED:field_name]"
    assert redacted["details"] == {
        "PKCS12": hidden,
        "cert_p12": hidden,
        "ed25519": hidden,
        "env": [{"name": "TLS_PKCS12", "value": hidden}],
        "p12_count": 2,
    }
    assert redacted["changes"][0]["after"] == hidden


@pytest.mark.parametrize(
    "number",
    [
        "4111111111111111",  # Visa
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111.1111.1111.1111",
        "5555555555554444",  # Mastercard
        "2223003122003222",  # Mastercard, 2-series
        "3782 822463 10005",  # American Express, as printed
        "6011111111111117",  # Discover
        "3530111333300000",  # JCB
        "30569309025904",  # Diners Club
        "6200000000000005",  # UnionPay
        "6212 3456 7890 1234 569",  # a 19-digit UnionPay, grouped 4-4-4-4-3
        "4111-1111-1111-1111-110",  # a 19-digit Visa
    ],
)
def test_a_payment_card_number_in_text_is_removed(number: str) -> None:
    """A card number is kept nowhere it could be read back (PCI DSS): a
    support note quoting one, a payment's details."""
    for body in _places(f"charged card {number}, exp 12/29"):
        redaction = REDACTOR.redact(body)
        assert number not in json.dumps(redaction.body), body
        assert [rule for _, rule in redaction.hits] == ["payment_card"]


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("card 4111 1111 1111 1111 12/25", "card [REDACTED:payment_card] 12/25"),
        ("card 4111111111111111 123", "card [REDACTED:payment_card] 123"),
        ("card 4111 1111 1111 1111 123", "card [REDACTED:payment_card] 123"),
        # a 16-digit card and its CVV read as a 19-digit one fail the check:
        # the 16 digits are still a card (helper-195)
        ("card 5555 5555 5555 4444 737 ok", "card [REDACTED:payment_card] 737 ok"),
        ("card 6011 1111 1111 1117 123", "card [REDACTED:payment_card] 123"),
        ("paid at 10:32 4111 1111 1111 1111", "paid at 10:32 [REDACTED:payment_card]"),
        ("qty 1 4111111111111111", "qty 1 [REDACTED:payment_card]"),
        ("alice,4111111111111111,12/25", "alice,[REDACTED:payment_card],12/25"),
        ("/cards/4111111111111111/charge", "/cards/[REDACTED:payment_card]/charge"),
        ("?card=4111111111111111&exp=1225", "?card=[REDACTED:payment_card]&exp=1225"),
        ("cc_4111111111111111", "cc_[REDACTED:payment_card]"),
        # after 4-digit groups that are no IBAN's, with no country code at their
        # head (helper-195)
        ("ref 2024 4111 1111 1111 1111", "ref 2024 [REDACTED:payment_card]"),
        ("batch 0042 0007 5555 5555 5555 4444", "batch 0042 0007 [REDACTED:payment_card]"),
        # after what only looks like an IBAN's head: a booking code and a word
        # (helper-200: each was kept in clear)
        ("flight BA23 with 4111111111111111", "flight BA23 with [REDACTED:payment_card]"),
        (
            "Booking UA90 card 4111 1111 1111 1111 exp 12/29",
            "Booking UA90 card [REDACTED:payment_card] exp 12/29",
        ),
        ("user ab12 paid 5555555555554444", "user ab12 paid [REDACTED:payment_card]"),
        ("IBAN DE89 3704 4111 1111 1111 1111 00", "IBAN DE89 3704 [REDACTED:payment_card] 00"),
        # a card and its CVV by a dash or a dot, as by a space (helper-200)
        ("card 5555-5555-5555-4444-737", "card [REDACTED:payment_card]-737"),
        ("card 5555.5555.5555.4444.737", "card [REDACTED:payment_card].737"),
    ],
)
def test_a_card_number_is_found_beside_what_is_written_with_one(text: str, redacted: str) -> None:
    """Cards are written beside their expiry or CVV, after a time or a count,
    in CSV, in URLs (helper-191: each of these was kept in clear)."""
    assert REDACTOR.redact(_event(description=text)).body["description"] == redacted


@pytest.mark.parametrize(
    "text",
    [
        "charged card 4111111111111112",  # fails the Luhn check
        "ISBN 9780306406157",  # no card brand starts so
        "at 1733390000000000 us",  # a timestamp in microseconds
        "ratio 0.4111111111111111",
        "4111 1111-1111 1111",  # two kinds of separator
        "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",  # not grouped as a card is
        "call +4111111111111111",
        "build v4111111111111111",
        "a run 41111111111111111111",  # 20 digits
        "order 4111111111111111x2",
        "call 4915112345603",  # 13 digits: a phone number without its +, not a Visa
        "IBAN ES28 2100 4002 0002 0005 1332",  # a bank account's 16 digits pass Luhn
        "IBAN ES72 2100 4009 0098 7654 3210",
        # 16 digits of a card's shape from an IBAN's second, third or fourth group
        "IBAN DE06 3704 4111 1111 1111 1111 00",
        "IBAN LC27 HEMM 0001 4111 1111 1111 1111 00",
        "IBAN MU33 BOMM 0101 1010 4111 1111 1111 1111",
        "IBAN DE0637044111111111111111100",  # stored without its spaces
    ],
)
def test_numbers_that_are_not_card_numbers_are_kept(text: str) -> None:
    assert REDACTOR.redact(_event(description=text)).hits == []


def test_a_card_shaped_id_is_kept() -> None:
    """Ids are kept as sent (filters compare them): an order number of a card's
    shape as a resource id is one."""
    body = _event(resource={"type": "order", "id": "4111111111111111"})
    assert REDACTOR.redact(body).hits == []


def test_in_hmac_mode_one_card_written_with_or_without_separators_joins() -> None:
    """HMAC mode lets an investigator see that two events carried one card,
    and find it with HashSecret: its HMAC is of its digits alone, however it
    was grouped (helper-195: `4111 1111 1111 1111` and `4111111111111111`
    got two HMACs)."""
    key = b"k" * 32
    written = ("4111 1111 1111 1111", "4111111111111111", "4111-1111-1111-1111")
    hashed = {
        REDACTOR.redact(_event(description=f"card {card}"), hmac_key=key).body["description"]
        for card in written
    }
    assert hashed == {f"card {hmac_token(key, '4111111111111111')}"}


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # An element's text up to its own closing tag, not what follows it.
        (
            "<a><password>x y</password>tail</a>",
            "<a><password>[REDACTED:secret_assignment]</password>tail</a>",
        ),
        # Names about the secret and counts are other elements.
        ("<passwordPolicy>strong</passwordPolicy><tokens>3</tokens>", None),
        ("<spin>3</spin><p>a password>8 chars</p>", None),
        # An operator's name, as the defaults.
        ("<ssn>078-05-1120</ssn>", "<ssn>[REDACTED:secret_assignment]</ssn>"),
    ],
)
def test_an_xml_elements_text_is_replaced_only_under_a_denied_name(
    text: str, shown: str | None
) -> None:
    body = _event(description=text)
    redaction = REDACTOR.with_rules(field_names=["ssn"]).redact(body)
    assert redaction.body["description"] == (text if shown is None else shown)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # .NET's appSettings: the value of an entry whose key names a secret.
        (
            '<appSettings><add key="Password" value="hunter2 net!"/>'
            '<add key="Host" value="db1"/></appSettings>',
            '<appSettings><add key="Password" value="[REDACTED:secret_assignment]"/>'
            '<add key="Host" value="db1"/></appSettings>',
        ),
        (
            "<add key='Smtp:ApiKey' value='k3y-abc-555' />",
            "<add key='Smtp:ApiKey' value='[REDACTED:secret_assignment]' />",
        ),
        # Other attributes between, `name` as the key, the value first.
        (
            '<param name="db.password" type="string" value="s3cr3t"/>',
            '<param name="db.password" type="string" value="[REDACTED:secret_assignment]"/>',
        ),
        (
            '<add value="pin-4821" key="card_pin"/>',
            '<add value="[REDACTED:secret_assignment]" key="card_pin"/>',
        ),
        # As JSON writes XML inside a string.
        (
            '<add key=\\"ClientSecret\\" value=\\"cs-77\\"/>',
            '<add key=\\"ClientSecret\\" value=\\"[REDACTED:secret_assignment]\\"/>',
        ),
        # An operator's name, as the defaults.
        (
            '<add key="SSN" value="078-05-1120"/>',
            '<add key="SSN" value="[REDACTED:secret_assignment]"/>',
        ),
        # Keys about the secret, counts, words ending in `pin`, another element's value.
        ('<add key="PasswordPolicy" value="strong"/><add key="Tokens" value="3"/>', None),
        ('<add key="Spin" value="42"/><add key="ApiKeyName" value="ci"/>', None),
        ('<add key="Password"/><add key="Host" value="db1"/>', None),
    ],
)
def test_an_attribute_pairs_value_is_replaced_only_under_a_denied_key(
    text: str, shown: str | None
) -> None:
    """`<add key="Password" value="…"/>`, as .NET's configuration files keep
    their settings, was stored in clear (helper-275): the text rules read a
    name followed by `=`, `:` or `=>`, or an element of that name."""
    body = _event(description=text)
    redaction = REDACTOR.with_rules(field_names=["ssn"]).redact(body)
    assert redaction.body["description"] == (text if shown is None else shown)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # A CDATA section, whose text may hold `<` and `>` unescaped.
        (
            "<password><![CDATA[s3cr<et>]]></password>",
            "<password><![CDATA[[REDACTED:secret_assignment]]]></password>",
        ),
        (
            '<wsse:Password Type="PasswordText"><![CDATA[hunter2 ]]x]]></wsse:Password>',
            '<wsse:Password Type="PasswordText"><![CDATA[[REDACTED:secret_assignment]]]>'
            "</wsse:Password>",
        ),
        # Java's properties as XML, Spring's and Hibernate's properties: the
        # text of an element whose `key` or `name` attribute ends with a denied name.
        (
            '<properties><entry key="db.user">app</entry><entry key="db.password">hunter2'
            "</entry></properties>",
            '<properties><entry key="db.user">app</entry><entry key="db.password">'
            "[REDACTED:secret_assignment]</entry></properties>",
        ),
        (
            '<property name="hibernate.connection.password"><![CDATA[p<w>d]]></property>',
            '<property name="hibernate.connection.password">'
            "<![CDATA[[REDACTED:secret_assignment]]]></property>",
        ),
        (
            '<entry key=\\"ApiKey\\">k3y-abc<\\/entry>',
            '<entry key=\\"ApiKey\\">[REDACTED:secret_assignment]<\\/entry>',
        ),
        # mysql's password glued to its `-p`, as a command line in a text says it.
        (
            "mysql -h db -u root -pS3cr3t! app",
            "mysql -h db -u root -p[REDACTED:secret_assignment] app",
        ),
        (
            "run: mysqldump -uroot -p'hunter 2' app > dump.sql",
            "run: mysqldump -uroot -p'[REDACTED:secret_assignment]' app > dump.sql",
        ),
        (
            '/usr/bin/mariadb --host=db -p"pa ss" -e "select 1"',
            '/usr/bin/mariadb --host=db -p"[REDACTED:secret_assignment]" -e "select 1"',
        ),
        # Kept: a key about the secret, an element that closes itself, another
        # element's text after it, psql's `-p` (a port), mysql's `-P` (a port)
        # and its `-p` alone (it asks), another command's `-p`.
        ('<entry key="password.policy">strong</entry><entry key="tokens">3</entry>', None),
        ('<add key="Password" value=""/> <b>text</b>', None),
        ("psql -h db -p5432 app; mysql -P 3306 -u root -p app", None),
        ("mkdir -p/tmp/x; mysql -u root -p\nthen -pX", None),
        ("<![CDATA[hunter2]]> in <note>password</note>", None),
    ],
)
def test_cdata_keyed_elements_and_mysqls_glued_password_are_replaced(
    text: str, shown: str | None
) -> None:
    """docs/redaction.md listed them as kept: `<password><![CDATA[…]]></password>`,
    `<entry key="password">…</entry>` (Java's properties as XML) and
    `mysql -p…` on a command line. Each is read in time linear in the text
    (test_redaction_time_grows_linearly_with_the_text has their worst runs)."""
    body = _event(description=text)
    redaction = REDACTOR.redact(body)
    assert redaction.body["description"] == (text if shown is None else shown)


@pytest.mark.parametrize(
    "key",
    [
        "pwd_hash",
        "pwdHash",
        "passwd_hash",
        "db_pass_hash",
        "pw_hash",
        "PIN_HASH",
        "cardPinHash",
        "pin_hashed",
        "otp_hash",
        "cvv_digest",
        "passcode_hash",
        "secret_hash",
        "recovery_code_hash",
        "ssn_hash",  # an operator's name
        "pwd_hash_2",
    ],
)
def test_a_hash_of_a_secret_that_can_be_guessed_is_a_secret(key: str) -> None:
    """A password's, a PIN's, a CVV's hash can be cracked offline (a PIN's
    or a CVV's in a moment): under `pwd_hash`, `pin_hash`… it was stored in
    clear, only `password_hash` was denied (helper-275)."""
    redactor = REDACTOR.with_rules(field_names=["ssn"])
    bcrypt = "$2b$12$KIXQJ3xQ8kJ9v9Qx1Xy8eO7u6TlZQ1Wc2R3e4f5g6h7i8j9k0l1m2"
    assert redactor.redact(_event(details={key: bcrypt})).hits == [(f"details.{key}", "field_name")]


@pytest.mark.parametrize(
    "key",
    ["token_hash", "refresh_token_hash", "session_id_hash", "spin_hash", "content_hash", "hash"],
)
def test_a_hash_of_a_random_token_or_of_no_secret_is_kept(key: str) -> None:
    """A token's or a session id's hash cannot be cracked: services keep it
    to look the token up by, and it correlates events as an id does."""
    body = _event(details={key: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"})
    assert REDACTOR.redact(body).hits == []


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "row: pwd_hash=$2b$12$KIXQJ3xQ8kJ9v9Qx1Xy8eO7u6TlZQ1Wc2R3e4f5g6h7i8j9k0l1m2 id=7",
            "row: pwd_hash=[REDACTED:secret_assignment] id=7",
        ),
        (
            '{"password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub"}',
            '{"password_hash": "[REDACTED:secret_assignment]"}',
        ),
        ("PIN_HASH: '81dc9bdb52d04dc2'", "PIN_HASH: '[REDACTED:secret_assignment]'"),
        (
            "<pin_hash>81dc9bdb52d04dc2</pin_hash>",
            "<pin_hash>[REDACTED:secret_assignment]</pin_hash>",
        ),
        # A token's hash, a hash after a word ending in `pin`: kept.
        ("token_hash=9f86d081884c7d65 spin_hash=9f86d081884c7d65", None),
    ],
)
def test_a_hash_of_a_secret_that_can_be_guessed_is_hidden_in_text(
    text: str, shown: str | None
) -> None:
    assert REDACTOR.redact(_event(description=text)).body["description"] == (
        text if shown is None else shown
    )


def test_an_http_route_loses_a_token_in_its_path_and_keeps_the_rest() -> None:
    """A path, not a template, can hold a token (`/reset/<token>`): scanned as
    ids are (ADR 0136); a template or plain path is left as it is."""
    body = _event(context={"http_route": "/v1/hooks/ghp_16C7e42F292c6912E7710c838347Ae178B4a/run"})
    redaction = REDACTOR.redact(body)
    assert redaction.body["context"]["http_route"] == "/v1/hooks/[REDACTED:github_token]/run"
    assert redaction.hits == [("context.http_route", "github_token")]
    kept = _event(context={"http_route": "/v1/templates/{id}", "http_method": "GET"})
    assert REDACTOR.redact(kept).body is kept


@pytest.mark.parametrize("hmac_key", [None, b"k" * 32])
def test_a_long_http_route_loses_only_its_token(hmac_key: bytes | None) -> None:
    """A route may be 512 characters long, twice an id: one of 400 that a
    token's HMAC leaves under 512 keeps all but the token, as an id under
    its limit does; it was replaced whole once past an id's 256."""
    token = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
    head, tail = "/v1/" + "segment/" * 40, "/run/" + "x" * 40
    route = head + token + tail
    assert 300 < len(route) <= 512
    redaction = REDACTOR.redact(_event(context={"http_route": route}), hmac_key=hmac_key)
    shown = "[REDACTED:github_token]" if hmac_key is None else hmac_token(hmac_key, token)
    assert redaction.body["context"]["http_route"] == head + shown + tail
    assert redaction.hits == [("context.http_route", "github_token")]


def test_an_http_route_its_secrets_would_make_too_long_is_replaced_whole() -> None:
    """Past the route's own limit (512) once its secrets' HMACs are in, a
    route is replaced whole, as an id past 256 is."""
    route = "/" + "".join(f"a://:{n:02}@/" for n in range(60))[:511]
    key = b"k" * 32
    redaction = REDACTOR.redact(_event(context={"http_route": route}), hmac_key=key)
    assert redaction.body["context"]["http_route"] == hmac_token(key, route)
