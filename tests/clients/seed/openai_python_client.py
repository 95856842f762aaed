# Seed example, copied VERBATIM (everything below the blank line after this header).
# Source: oobabooga/text-generation-webui (renamed oobabooga/textgen), docs/12 - OpenAI API.md
#   at commit 65cef2c73177fa674ebb8b70a2566e9bac7990a8 (file blob 866b6432d1a83ab144d1ce55459fce781d7f1916),
#   section "Third-party application setup".
# The hard-coded http://127.0.0.1:5000 is left as is: run it through tests/clients/run_seed.py,
# which rewrites the host:port (and applies the doc's own API-key edit) in a temporary copy.
# (the "official python openai client" example)

from openai import OpenAI

client = OpenAI(
    api_key="sk-111111111111111111111111111111111111111111111111",
    base_url="http://127.0.0.1:5000/v1"
)

response = client.chat.completions.create(
    model="x",
    messages=[{"role": "user", "content": "Hello!"}]
)
print(response.choices[0].message.content)
