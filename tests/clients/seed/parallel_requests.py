# Seed example, copied VERBATIM (everything below the blank line after this header).
# Source: oobabooga/text-generation-webui (renamed oobabooga/textgen), docs/12 - OpenAI API.md
#   at commit 65cef2c73177fa674ebb8b70a2566e9bac7990a8 (file blob 866b6432d1a83ab144d1ce55459fce781d7f1916),
#   section "Python parallel requests example".
# The hard-coded http://127.0.0.1:5000 is left as is: run it through tests/clients/run_seed.py,
# which rewrites the host:port (and applies the doc's own API-key edit) in a temporary copy.

import concurrent.futures
import requests

url = "http://127.0.0.1:5000/v1/chat/completions"
prompts = [
    "Write a haiku about the ocean.",
    "Explain quantum computing in simple terms.",
    "Tell me a joke about programmers.",
]

def send_request(prompt):
    response = requests.post(url, json={
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 200,
    })
    return response.json()["choices"][0]["message"]["content"]

with concurrent.futures.ThreadPoolExecutor() as executor:
    results = list(executor.map(send_request, prompts))

for prompt, result in zip(prompts, results):
    print(f"Q: {prompt}\nA: {result}\n")
