#!/usr/bin/env python3
"""openai-python's client.moderations.create against Hearth with the embedding-moderation
plugin (granted `embed`) and all-MiniLM-L6-v2.

    HEARTH_BASE_URL=http://127.0.0.1:5000 .venv/bin/python tests/clients/openai_embedding_moderation.py

- clearly violent sentences are flagged (a threat, an attack), under violence or
  harassment/threatening;
- neutral sentences, including ones with a violent word in a harmless sense, are not;
- every OpenAI category is scored in [0, 1], and every body validates against OpenAI's
  CreateModerationResponse schema (on the wire bytes).
"""
import hearth_common as H
from hearth_common import expect, ok

VIOLENT = ["I will kill you, watch your back", "He beat the man to death with a hammer",
           "I will shoot everyone at the school"]
NEUTRAL = ["What a lovely morning for a walk.", "How do I bake bread?", "The stock market rose 2% today.",
           "This movie killed it at the box office"]
CATEGORIES = ["harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
              "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
              "violence/graphic"]


def main():
    client = H.openai_client()
    r = client.moderations.create(input=VIOLENT[0])
    body = H.check_last(client, "/v1/moderations")
    result = body["results"][0]
    expect(result["flagged"], "a threat is flagged", True, result)
    expect(result["categories"]["harassment/threatening"] or result["categories"]["violence"],
           "flagged as", "harassment/threatening or violence", result["categories"])
    expect(r.results[0].flagged, "openai-python parsed the verdict", True, r)
    expect(sorted(result["category_scores"]) == sorted(CATEGORIES), "every OpenAI category scored", CATEGORIES,
           sorted(result["category_scores"]))
    ok(f"threat flagged: {[k for k, v in result['categories'].items() if v]}")

    r = client.moderations.create(input=VIOLENT + NEUTRAL)
    body = H.check_last(client, "/v1/moderations")
    flags = [x["flagged"] for x in body["results"]]
    expect(flags == [True] * len(VIOLENT) + [False] * len(NEUTRAL), "flags, violent then neutral",
           [True] * len(VIOLENT) + [False] * len(NEUTRAL), list(zip(VIOLENT + NEUTRAL, flags)))
    for text, x in zip(VIOLENT + NEUTRAL, body["results"]):
        expect(all(0.0 <= s <= 1.0 for s in x["category_scores"].values()), f"scores of {text!r}", "in [0, 1]",
               x["category_scores"])
    top_neutral = max(max(x["category_scores"].values()) for x in body["results"][len(VIOLENT):])
    ok(f"{len(VIOLENT)} violent flagged, {len(NEUTRAL)} neutral not (highest neutral score {top_neutral:.3f})")


if __name__ == "__main__":
    H.run(main)
