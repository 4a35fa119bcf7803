// The OpenAI JS SDK against Portico: node client.mjs <base URL with /v1> <api key> <model>
// Prints one JSON object with what each call returned; tests/e2e/test_js_client.py checks it.
import OpenAI from "openai";

const [baseURL, apiKey, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });
const out = {};

const chat = await client.chat.completions.create({ model, messages: [{ role: "user", content: "hello js" }] });
out.chat = chat.choices[0].message.content;

let streamed = "";
const stream = await client.chat.completions.create({
  model, stream: true, messages: [{ role: "user", content: "stream js" }],
});
for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? "";
out.chat_stream = streamed;

const first = await client.responses.create({ model, instructions: "Be brief.", input: "responses js" });
out.responses = first.output_text;
out.responses_usage = first.usage?.total_tokens ?? null;
const second = await client.responses.create({ model, input: "and again", previous_response_id: first.id });
out.follow_up = second.output_text;
out.retrieved = (await client.responses.retrieve(first.id)).id === first.id;

const events = [];
const rstream = client.responses.stream({ model, input: "responses stream js" });
for await (const event of rstream) events.push(event.type);
const final = await rstream.finalResponse();
out.responses_stream_events = events;
out.responses_stream_text = final.output_text;

const weather = {
  type: "function", name: "get_weather", description: "Weather for a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
};
const call = await client.responses.create({ model, input: "weather in Paris?", tools: [weather] });
out.function_calls = call.output.filter((o) => o.type === "function_call").map((o) => o.name);

const missing = await client.responses.create({ model: "no-such-model", input: "x" }).catch((e) => e);
out.error = { status: missing.status, code: missing.code ?? missing.error?.code ?? null };

console.log(JSON.stringify(out));
