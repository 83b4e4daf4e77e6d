"""The OpenAI chat completions dialect: `request` and `messages` (a chat request → a Messages API
request, over the shared rules of `proxy.translate.claude`), `response` and `stream` (a Message or
its stream events → a chat.completion or its chunks)."""
