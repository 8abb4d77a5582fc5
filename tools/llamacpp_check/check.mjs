// Greedy generation by llama.cpp (node-llama-cpp 3.21.1, its prebuilt CPU
// build) on a GGUF file, from token ids: what `lockstep generate
// --reference` is compared with (scripts/check-llamacpp.sh).
//   node check.mjs MODEL.gguf PROMPT_IDS_CSV N  ->  {"tokens":[...]}
import {getLlama} from "node-llama-cpp";

const [, , modelPath, promptCsv, n] = process.argv;
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({contextSize: 512, batchSize: 512,
                                           threads: 1});
const sequence = context.getSequence();
const prompt = promptCsv.split(",").map(Number);
const tokens = [];
for await (const token of sequence.evaluate(prompt, {temperature: 0})) {
  tokens.push(token);
  if (tokens.length >= Number(n))
    break;
}
console.log(JSON.stringify({tokens}));
await context.dispose();
await model.dispose();
await llama.dispose();
