// The official OpenAI client against `trustmoe serve`: models, a greedy
// completion, a streamed chat, and an API error surfaced as the client's
// APIError.  Usage: node serve_openai.mjs PORT MODEL EXPECTED_TEXT
// (OPENAI_MODULE: where the openai package is installed).
const [port, model, expected] = process.argv.slice(2);
const { default: OpenAI } = await import(process.env.OPENAI_MODULE);
const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "none", maxRetries: 0 });
let pass = 0, fail = 0;
const check = (name, cond, detail) => {
  if (cond) { pass++; console.log(`ok   openai client: ${name}`); }
  else { fail++; console.log(`FAIL openai client: ${name}: ${JSON.stringify(detail)}`); }
};
const models = await client.models.list();
check("models.list", models.data.length === 1 && models.data[0].id === model, models.data);
const c = await client.completions.create({ model, prompt: "The jury said", max_tokens: 12, temperature: 0 });
check("completions.create equals generate", c.choices[0].text === expected, [c.choices[0].text, expected]);
check("usage", c.usage.completion_tokens === 12 && c.usage.total_tokens === c.usage.prompt_tokens + 12, c.usage);
const plain = await client.chat.completions.create({
  model, messages: [{ role: "user", content: "Tell me about the jury." }], max_tokens: 10, temperature: 0 });
const stream = await client.chat.completions.create({
  model, messages: [{ role: "user", content: "Tell me about the jury." }], max_tokens: 10, temperature: 0,
  stream: true });
let text = "", last = null;
for await (const chunk of stream) {
  text += chunk.choices[0]?.delta?.content ?? "";
  if (chunk.choices[0]?.finish_reason) last = chunk.choices[0].finish_reason;
}
check("streamed chat equals the plain one", text === plain.choices[0].message.content && last === "length",
      [text, plain.choices[0].message.content, last]);
try {
  await client.completions.create({ model: "no-such-model", prompt: "x", max_tokens: 2 });
  check("unknown model raises", false, "no error");
} catch (e) {
  check("unknown model raises APIError 404", e instanceof OpenAI.APIError && e.status === 404, [e.status, e.message]);
}
console.log(`${pass} passed, ${fail} failed`);
process.exit(fail ? 1 : 0);
