"""Loupe's own implementation of InternLM-XComposer2.5 (no remote code: the folder's .py files are never
read), proven against the model's real code by tests/test_xcomposer_reference.py (fixture of its outputs on a
tiny published-layout folder: ids identical, first-step logits within 1e-4 relative, float32 on CPU).

Decisions:
- The decoder IS transformers' LlamaForCausalLM: InternLM2 is Llama with a fused `wqkv` (split at load from
  its GQA layout), renamed norms/MLP, an untied `output`, RoPE θ from the config with its dynamic-NTK
  scaling passed as transformers' "dynamic" rope (the same formula; it changes nothing below
  max_position_embeddings). So generate(), SDPA attention and the fast decode path all apply.
- Partial-LoRA (plora.py) replaces every projection; its LoRA runs only at image positions of the prompt's
  forward, so decoding is a plain InternLM2 step.
- Vision (vision.py): transformers' CLIPVisionModel (CLIP-L/14 at 560 px, quick GELU, layers counted from the
  folder's `vit.*` weights), the last layer's patch features, 2×2 merge, separators and projector in the
  real code's order. The HD transform (hd_transform.py) is pure and also gives admission its token counts.
- Tokenizer (tokenizer.py): sentencepiece on tokenizer.model, special tokens split as the model's tokenizer
  does. Prompt (prompt.py): chat()'s turns, BOS rules (two BOS with no image), `<ImageHere>` per image.
- Weights (weights.py): published names from sharded .safetensors or .bin, each tensor converted and placed
  once (meta-device build, no random init); the plan's device map (published names) is mapped onto these
  modules and a split decoder gets input-moving hooks (placement.py).
- Generation (answering.py): greedy/sampling through generate(); stop at eos or `[UNUSED_TOKEN_145]`; the
  repetition penalty is Loupe's setting, whose default (1.005) is the model's own. With images the prompt is
  passed as embeddings only, so, as in the model's chat(), the penalty applies to new tokens only; without
  images the prompt's ids count too.
- Fast decode (fast_path.py): the model runs the prompt itself (LoRA included) and hands its KV cache to the
  fast path's static cache; every later token goes through the fast path's plain decoder step.
"""
