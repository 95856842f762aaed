#!/usr/bin/env bash
# Seed curl examples, each function body copied VERBATIM from
# oobabooga/text-generation-webui (renamed oobabooga/textgen), docs/12 - OpenAI API.md
# at commit 65cef2c73177fa674ebb8b70a2566e9bac7990a8 (file blob 866b6432d1a83ab144d1ce55459fce781d7f1916); the comment above each function names its section.
# The hard-coded http://127.0.0.1:5000 is left as is: tests/clients/run_seed.py runs a
# temporary copy with the host:port rewritten. See README.md for which ones apply now.
#
#   curl_examples.sh --list          names of the examples
#   curl_examples.sh NAME...         run those examples, in order

# section "Completions"
seed_completions() {
curl http://127.0.0.1:5000/v1/completions \
  -H "Content-Type: application/json" \
  -d '{
    "prompt": "This is a cake recipe:\n\n1.",
    "max_tokens": 512,
    "temperature": 0.6,
    "top_p": 0.95,
    "top_k": 20
  }'
}

# section "Chat completions"
seed_chat_completions() {
curl http://127.0.0.1:5000/v1/chat/completions \
  -H "Content-Type: application/json" \
  -d '{
    "messages": [
      {
        "role": "user",
        "content": "Hello!"
      }
    ],
    "temperature": 0.6,
    "top_p": 0.95,
    "top_k": 20
  }'
}

# section "Chat completions with characters"
seed_chat_completions_with_characters() {
curl http://127.0.0.1:5000/v1/chat/completions \
  -H "Content-Type: application/json" \
  -d '{
    "messages": [
      {
        "role": "user",
        "content": "Hello! Who are you?"
      }
    ],
    "mode": "chat-instruct",
    "character": "Example",
    "temperature": 0.6,
    "top_p": 0.95,
    "top_k": 20
  }'
}

# section "With /v1/chat/completions (recommended!)"
seed_multimodal_chat_completions() {
curl http://127.0.0.1:5000/v1/chat/completions \
  -H "Content-Type: application/json" \
  -d '{
    "messages": [
      {
        "role": "user",
        "content": [
          {"type": "text", "text": "Please describe what you see in this image."},
          {"type": "image_url", "image_url": {"url": "https://github.com/turboderp-org/exllamav3/blob/master/examples/media/cat.png?raw=true"}}
        ]
      }
    ],
    "temperature": 0.6,
    "top_p": 0.95,
    "top_k": 20
  }'
}

# section "With /v1/completions"
seed_multimodal_completions() {
curl http://127.0.0.1:5000/v1/completions \
  -H "Content-Type: application/json" \
  -d '{
    "messages": [
      {
        "role": "user",
        "content": [
          {
            "type": "text",
            "text": "About image <__media__> and image <__media__>, what I can say is that the first one"
          },
          {
            "type": "image_url",
            "image_url": {
              "url": "https://github.com/turboderp-org/exllamav3/blob/master/examples/media/cat.png?raw=true"
            }
          },
          {
            "type": "image_url",
            "image_url": {
              "url": "https://github.com/turboderp-org/exllamav3/blob/master/examples/media/strawberry.png?raw=true"
            }
          }
        ]
      }
    ],
    "temperature": 0.6,
    "top_p": 0.95,
    "top_k": 20
  }'
}

# section "Image generation"
seed_image_generation() {
curl http://127.0.0.1:5000/v1/images/generations \
  -H "Content-Type: application/json" \
  -d '{
    "prompt": "an orange tree",
    "steps": 9,
    "cfg_scale": 0,
    "batch_size": 1,
    "batch_count": 1
  }'
}

# section "SSE streaming"
seed_sse_streaming() {
curl http://127.0.0.1:5000/v1/chat/completions \
  -H "Content-Type: application/json" \
  -d '{
    "messages": [
      {
        "role": "user",
        "content": "Hello!"
      }
    ],
    "temperature": 0.6,
    "top_p": 0.95,
    "top_k": 20,
    "stream": true
  }'
}

# section "Logits"
seed_logits() {
curl -k http://127.0.0.1:5000/v1/internal/logits \
  -H "Content-Type: application/json" \
  -d '{
    "prompt": "Who is best, Asuka or Rei? Answer:",
    "use_samplers": false
  }'
}

# section "Logits after sampling parameters"
seed_logits_after_sampling() {
curl -k http://127.0.0.1:5000/v1/internal/logits \
  -H "Content-Type: application/json" \
  -d '{
    "prompt": "Who is best, Asuka or Rei? Answer:",
    "use_samplers": true,
    "top_k": 3
  }'
}

# section "List models"
seed_list_models() {
curl -k http://127.0.0.1:5000/v1/internal/model/list \
  -H "Content-Type: application/json"
}

# section "Load model"
seed_load_model() {
curl -k http://127.0.0.1:5000/v1/internal/model/load \
  -H "Content-Type: application/json" \
  -d '{
    "model_name": "Qwen_Qwen3-0.6B-Q4_K_M.gguf",
    "args": {
      "ctx_size": 32768,
      "flash_attn": true,
      "cache_type": "q8_0"
    }
  }'
}

# section "Load model"
seed_load_model_2() {
curl -k http://127.0.0.1:5000/v1/internal/model/load \
  -H "Content-Type: application/json" \
  -d '{
    "model_name": "Qwen_Qwen3-0.6B-Q4_K_M.gguf",
    "instruction_template": "Alpaca"
  }'
}

examples=(completions chat_completions chat_completions_with_characters multimodal_chat_completions multimodal_completions image_generation sse_streaming logits logits_after_sampling list_models load_model load_model_2)

if [ "${1:-}" = "--list" ] || [ $# -eq 0 ]; then
  printf "%s\n" "${examples[@]}"
  exit 0
fi
for name in "$@"; do
  if ! declare -F "seed_$name" >/dev/null; then
    echo "curl_examples.sh: no example named $name (see --list)" >&2
    exit 2
  fi
  "seed_$name" || exit $?
done
