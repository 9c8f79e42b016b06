"""The request docs/wordpress.md tells the site to make, run as written against the API."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_api import Api, api  # noqa: F401 - the served app fixture

DOC = Path(__file__).resolve().parents[1] / "docs" / "wordpress.md"


def test_the_documented_signup_request_works_as_written(api: Api) -> None:  # noqa: F811
    block = re.search(r"```http\n(.*?)```", DOC.read_text(), re.S)
    assert block, "docs/wordpress.md lost its example request"
    head, body = block.group(1).split("\n\n", 1)
    request_line, *header_lines = head.splitlines()
    method, path, _ = request_line.split()
    headers = dict(line.split(": ", 1) for line in header_lines)
    assert headers.pop("Host") == "mail.labourlist.org"
    real = api.key("subscribers:write", name="wordpress")
    assert headers["Authorization"] == "Bearer llm_YOUR_KEY"
    headers["Authorization"] = real["Authorization"]
    answer = api.http.request(method, api.base.removesuffix("/api/v1") + path, headers=headers,
                              data=body.strip().encode(), timeout=30)
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "pending" and answer.json()["sections"] == ["News"]
    again = api.http.request(method, api.base.removesuffix("/api/v1") + path, headers=headers,
                             data=body.strip().encode(), timeout=30)
    assert again.headers.get("Idempotent-Replayed") == "true"
