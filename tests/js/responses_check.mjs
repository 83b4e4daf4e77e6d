// Drives claude-proxy's Responses API (POST /v1/responses) with a real JS client and prints what the
// client saw, as JSON, for tests/test_e2e_responses_js.py to check.
//   node responses_check.mjs MODE BASE_URL API_KEY REQUEST_JSON
// MODE: openai-create | openai-stream (the openai npm client), ai-generate | ai-stream | ai-tools
// (the Vercel AI SDK with openai(model), which speaks the Responses API).
import OpenAI from "openai";
import { generateText, jsonSchema, stepCountIs, streamText, tool } from "ai";
import { createOpenAI } from "@ai-sdk/openai";

const [mode, baseURL, apiKey, requestJson] = process.argv.slice(2);
const request = JSON.parse(requestJson);

async function openaiCreate() {
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
  const response = await client.responses.create(request);
  return { response, outputText: response.output_text };
}

async function openaiStream() {
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
  const stream = await client.responses.create({ ...request, stream: true });
  const events = [];
  let text = "";
  let final = null;
  for await (const event of stream) {
    events.push({ type: event.type, sequence_number: event.sequence_number });
    if (event.type === "response.output_text.delta") text += event.delta;
    if (event.response && event.type !== "response.created" && event.type !== "response.in_progress") {
      final = event.response;
    }
  }
  return { events, text, final };
}

function aiModel() {
  const provider = createOpenAI({ baseURL, apiKey });
  return provider(request.model);
}

async function aiGenerate() {
  const result = await generateText({ model: aiModel(), prompt: request.input, maxRetries: 0 });
  return { text: result.text, finishReason: result.finishReason, usage: result.usage };
}

async function aiStream() {
  const result = streamText({ model: aiModel(), prompt: request.input, maxRetries: 0 });
  const pieces = [];
  for await (const piece of result.textStream) pieces.push(piece);
  return { pieces, text: await result.text, finishReason: await result.finishReason };
}

async function aiTools() {
  // An agent loop in the AI SDK: call the tool, run it here, send its result back, answer.
  const calls = [];
  const getWeather = tool({
    description: "Current weather for a city",
    inputSchema: jsonSchema({
      type: "object",
      properties: { city: { type: "string" } },
      required: ["city"],
      additionalProperties: false,
    }),
    execute: async ({ city }) => {
      calls.push(city);
      return `Sunny in ${city}`;
    },
  });
  const result = await generateText({
    model: aiModel(),
    prompt: request.input,
    tools: { get_weather: getWeather },
    stopWhen: stepCountIs(4),
    maxRetries: 0,
  });
  return { calls, steps: result.steps.length, text: result.text, finishReason: result.finishReason };
}

const modes = {
  "openai-create": openaiCreate,
  "openai-stream": openaiStream,
  "ai-generate": aiGenerate,
  "ai-stream": aiStream,
  "ai-tools": aiTools,
};
try {
  process.stdout.write(JSON.stringify(await modes[mode]()));
} catch (error) {
  // What the client raised, for the test's failure message: status and body when it is an HTTP error.
  const status = error.status ?? error.statusCode ?? null;
  process.stdout.write(JSON.stringify({ error: String(error), status, body: error.responseBody ?? error.error ?? null }));
  process.exitCode = 1;
}
