# Seed example, copied VERBATIM (everything below the blank line after this header).
# Source: oobabooga/text-generation-webui (renamed oobabooga/textgen), docs/12 - OpenAI API.md
#   at commit 65cef2c73177fa674ebb8b70a2566e9bac7990a8 (file blob 866b6432d1a83ab144d1ce55459fce781d7f1916),
#   section "Python chat example".
# The hard-coded http://127.0.0.1:5000 is left as is: run it through tests/clients/run_seed.py,
# which rewrites the host:port (and applies the doc's own API-key edit) in a temporary copy.

import requests

url = "http://127.0.0.1:5000/v1/chat/completions"

headers = {
    "Content-Type": "application/json"
}

history = []

while True:
    user_message = input("> ")
    history.append({"role": "user", "content": user_message})
    data = {
        "messages": history,
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 20
    }

    response = requests.post(url, headers=headers, json=data, verify=False)
    assistant_message = response.json()['choices'][0]['message']['content']
    history.append({"role": "assistant", "content": assistant_message})
    print(assistant_message)
