"""LlamaIndex's ``OpenAILike`` against Portico: python llamaindex_client.py <base URL with /v1> <api key> <model>

Runs in tests/clients-py/.venv (LlamaIndex pins openai<3, the main venv has openai 3); prints one JSON object
with what each call returned, which tests/e2e/test_sdk_clients.py checks.
"""

import json
import sys

from llama_index.core.llms import ChatMessage
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai_like import OpenAILike


def get_weather(city: str) -> str:
    """Weather for a city."""
    return f"sunny in {city}"


base, key, model = sys.argv[1:4]
llm = OpenAILike(model=model, api_base=base, api_key=key, is_chat_model=True, is_function_calling_model=True,
                 context_window=8192, max_retries=0, timeout=60)  # fmt: skip
out = {
    "complete": llm.complete("hello llamaindex").text,
    "chat": llm.chat([ChatMessage(role="user", content="chat llamaindex")]).message.content,
    "stream": "".join(r.delta or "" for r in llm.stream_chat([ChatMessage(role="user", content="stream li")])),
}
resp = llm.chat_with_tools([FunctionTool.from_defaults(fn=get_weather)], user_msg="weather in Paris?")
out["tool_calls"] = [(c.tool_name, c.tool_kwargs) for c in llm.get_tool_calls_from_response(resp)]
print(json.dumps(out))
