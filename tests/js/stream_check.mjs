// Streams one chat completion through claude-proxy with the official openai npm client's stream
// helper and prints what it reassembled, as JSON, for the Python end-to-end test to compare.
import OpenAI from "openai";

const [baseURL, apiKey, requestJson] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const request = JSON.parse(requestJson);

const stream = client.chat.completions.stream({ ...request, stream: true });
const final = await stream.finalChatCompletion();
process.stdout.write(JSON.stringify(final));
