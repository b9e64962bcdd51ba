// Reference encoder for npm_compare.sh: transformers.js (the @lenml/tokenizers fork) on a
// tokenizer.json + tokenizer_config.json pair.
//
// usage: node encode_reference.mjs <npm_dir> <tokenizer.json> <tokenizer_config.json> <input> [--decode]
// Prints one line of comma-separated ids (no special tokens added) per '\n'-separated line of
// <input>, then one line for the whole file. With --decode each line also has a tab and the hex of
// the UTF-8 bytes of decode(ids, {skip_special_tokens: false}). The input bytes are decoded like the C++ side does:
// ill-formed UTF-8 becomes U+FFFD per maximal subpart (TextDecoder, non-fatal) and a leading
// U+FEFF is kept (ignoreBOM).
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const [npmDir, tokenizerPath, configPath, inputPath, flag] = process.argv.slice(2);
const withDecode = flag === "--decode";
if (!inputPath) {
  console.error("usage: node encode_reference.mjs <npm_dir> <tokenizer.json> <tokenizer_config.json> <input>");
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(npmDir), "package.json"));
const { TokenizerLoader } = require("@lenml/tokenizers");

const tokenizer = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(fs.readFileSync(tokenizerPath, "utf8")),
  tokenizerConfig: JSON.parse(fs.readFileSync(configPath, "utf8")),
});
const decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
const bytes = fs.readFileSync(inputPath);

const lines = [];
let start = 0;
for (let i = 0; i < bytes.length; ++i) {
  if (bytes[i] === 0x0a) {
    lines.push(bytes.subarray(start, i));
    start = i + 1;
  }
}
if (start < bytes.length) lines.push(bytes.subarray(start));

const encodeLine = (text) => {
  const ids = tokenizer.encode(text, { add_special_tokens: false });
  if (!withDecode) return ids.join(",");
  const back = ids.length === 0 ? "" : tokenizer.decode(ids, { skip_special_tokens: false });
  return ids.join(",") + "\t" + Buffer.from(back, "utf8").toString("hex");
};
const out = [];
for (const line of lines) out.push(encodeLine(decoder.decode(line)));
out.push(encodeLine(decoder.decode(bytes)));
process.stdout.write(out.join("\n") + "\n");
