#!/usr/bin/env python3
"""Writes synthetic/tokenizer.json and synthetic/tokenizer_config.json: a tiny byte-level BPE tokenizer.json with the DeepSeek-V2
pre-tokenizer structure (docs/models.md §4: a Sequence of Isolated regex Splits,
Digits with individual_digits, then ByteLevel without regex), used by tokenizer_test.cc.

Vocab ids 0..255 are the 256 byte-level symbols in byte order (so an unmerged byte b encodes as
id b), merged tokens follow from 256 in merge order, ids up to 299 are unused, and the added
tokens sit at 300.. . Run from this directory; the output is checked in.
"""
import json
import os

# GPT-2 bytes_to_unicode.
printable = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100)))
byte_char = {}
extra = 0
for b in range(256):
    if b in printable:
        byte_char[b] = chr(b)
    else:
        byte_char[b] = chr(256 + extra)
        extra += 1


def sym(text):
    return "".join(byte_char[b] for b in text.encode("utf-8"))


vocab = {byte_char[b]: b for b in range(256)}
merge_texts = [
    ("h", "e"), ("l", "l"), ("e", "l"), ("he", "ll"), ("hell", "o"),  # "hello" (rank 2 is a decoy)
    (" ", "t"), ("t", "h"), (" t", "he"),                               # " the"
    ("a", "a"),                                                         # ties: leftmost first
    ("1", "2"),                                                         # never used: digits are split
    (" ", " "),                                                         # whitespace runs
]
merges = [[sym(left), sym(right)] for left, right in merge_texts]
# Chinese "你好": bytes -> characters -> the word.
for ch in "你好":
    s = sym(ch)
    merges.append([s[0], s[1]])
    merges.append([s[0] + s[1], s[2]])
merges.append([sym("你"), sym("好")])

next_id = 256
for left, right in merges:
    if left + right not in vocab:
        vocab[left + right] = next_id
        next_id += 1
assert next_id <= 300

# The DeepSeek LLM split regexes (llama.cpp's LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_LLM). The letter class
# holds six compatibility characters (U+1F7D, U+1FD3, U+1FDB, U+1FBE, U+2126, U+212A), written as
# escapes: Unicode normalisation (NFC) turns them into other code points, which leaves ranges such
# as "Ὗ-ώ" out of order and makes "K-ℭ" span most of the BMP.
pretokenizers = [
    {"type": "Split", "pattern": {"Regex": "[\r\n]"}, "behavior": "Isolated", "invert": False},
    {"type": "Split", "pattern": {"Regex": "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u1f7dᾀ-ᾴᾶ-ᾼ\u1fbeῂ-ῄῆ-ῌῐ-\u1fd3ῖ-\u1fdbῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212a-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+"}, "behavior": "Isolated", "invert": False},
    {"type": "Split", "pattern": {"Regex": "\\s?[!-/:-~！-／：-～‘-‟\u3000-。]+"}, "behavior": "Isolated", "invert": False},
    {"type": "Split", "pattern": {"Regex": "\\s+$"}, "behavior": "Isolated", "invert": False},
    {"type": "Split", "pattern": {"Regex": "[一-龥ࠀ-一가-\ud7ff]+"}, "behavior": "Isolated", "invert": False},
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
]


def added(id_, content, special, lstrip=False, rstrip=False):
    return {"id": id_, "content": content, "single_word": False, "lstrip": lstrip, "rstrip": rstrip,
            "normalized": not special, "special": special}


bos, eos = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
doc = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [
        added(300, bos, True),
        added(301, eos, True),
        added(302, "<tool>", False),
        added(303, "<tool>call", False),
        added(304, "<strip>", True, lstrip=True, rstrip=True),
    ],
    "normalizer": None,
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": pretokenizers},
    "post_processor": {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [300], "tokens": [bos]}},
    },
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "model": {
        "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
        "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
        "vocab": vocab,
        "merges": [f"{l} {r}" for l, r in merges],
    },
}
config = {
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": {"__type": "AddedToken", "content": bos, "lstrip": False, "normalized": True, "rstrip": False,
                  "single_word": False},
    "eos_token": eos,
    "clean_up_tokenization_spaces": False,
    "model_max_length": 4096,
    "tokenizer_class": "LlamaTokenizerFast",
    # DeepSeek-V2-Lite-Chat's template (docs/models.md §4, tokenizer/chat_template.h).
    "chat_template": "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
                     "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
                     "{{ 'User: ' + message['content'] + '\\n\\n' }}{% elif message['role'] == 'assistant' %}"
                     "{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}"
                     "{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}"
                     "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}",
}
os.makedirs("synthetic", exist_ok=True)
for name, value in (("tokenizer.json", doc), ("tokenizer_config.json", config)):
    with open(os.path.join("synthetic", name), "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=1)
        f.write("\n")
