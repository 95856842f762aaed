#!/usr/bin/env python3
"""openai-python's client.moderations.create against Hearth with the keyword-moderation plugin.

    HEARTH_BASE_URL=http://127.0.0.1:5000 .venv/bin/python tests/clients/openai_moderation.py

- a threatening text is flagged, with `harassment/threatening` and `violence` flagged and scored;
- a harmless text is not flagged and every score is 0;
- a list of inputs gets one result each, in order;
- every body validates against OpenAI's CreateModerationResponse schema (on the wire bytes).
"""
import hearth_common as H
from hearth_common import expect, ok


def main():
    client = H.openai_client()

    r = client.moderations.create(input="I will kill you, watch your back")
    body = H.check_last(client, "/v1/moderations")
    expect(len(body["results"]) == 1, "results for one input", 1, body)
    result = r.results[0]
    expect(result.flagged, "threat flagged", True, body)
    cats = body["results"][0]["categories"]
    scores = body["results"][0]["category_scores"]
    expect(cats["harassment/threatening"] and cats["violence"], "flagged categories",
           "harassment/threatening and violence", cats)
    expect(scores["violence"] > 0.5, "violence score", "> 0.5", scores)
    expect(result.categories.harassment_threatening, "openai-python parsed harassment/threatening",
           True, result)
    ok(f"threat flagged: {[k for k, v in cats.items() if v]}")

    r = client.moderations.create(input=["What a lovely morning for a walk.", "I want to murder him"])
    body = H.check_last(client, "/v1/moderations")
    expect([x.flagged for x in r.results] == [False, True], "flags of two inputs", [False, True], body)
    expect(all(v == 0 for v in body["results"][0]["category_scores"].values()),
           "scores of a harmless text", "all 0", body["results"][0])
    ok("list input: one result per text, in order")


if __name__ == "__main__":
    H.run(main)
