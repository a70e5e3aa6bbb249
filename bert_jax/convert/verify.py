"""Per-layer comparison of a bert_jax model with the transformers reference (needs torch + transformers)."""

from __future__ import annotations

import numpy as np


def sample_inputs(vocab_size: int, max_length: int, pad_id: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Three rows with different padding, ids away from the specials."""
  rng = np.random.default_rng(seed)
  length = min(24, max_length) if max_length > 0 else 24
  ids = rng.integers(min(5, vocab_size - 1), vocab_size, size=(3, length)).astype(np.int64)
  mask = np.ones_like(ids)
  for row, real in enumerate((length, max(2, length // 3), max(2, length // 2))):
    mask[row, real:] = 0
    ids[row, real:] = pad_id
  return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def verify_against_reference(model, params, hf_dir: str) -> float:
  """Prints the max |difference| per hidden layer (and MLM logits); returns the largest."""
  try:
    import torch
    import transformers
  except ImportError as e:
    raise SystemExit(f"--verify needs torch and transformers (pip install -e '.[parity]'): {e}") from e
  cfg = model.config
  inputs = sample_inputs(cfg.vocab_size, cfg.max_length, cfg.pad_token_id)
  with_head = bool(model.head_type and model.head_type.masked_lm)
  cls = transformers.AutoModelForMaskedLM if with_head else transformers.AutoModel
  ref = cls.from_pretrained(hf_dir, attn_implementation="eager").eval()
  with torch.no_grad():
    ref_out = ref(**{k: torch.from_numpy(v) for k, v in inputs.items()}, output_hidden_states=True)
  ours = model.apply({"params": params}, inputs["input_ids"].astype(np.int32),
                     attention_mask=inputs["attention_mask"].astype(np.int32),
                     token_type_ids=inputs["token_type_ids"].astype(np.int32), output_hidden_states=True)
  mask = inputs["attention_mask"].astype(bool)
  worst = 0.0
  for i, (a, b) in enumerate(zip(np.asarray(ours.hidden_states), ref_out.hidden_states)):
    diff = float(np.abs(a - b.numpy())[mask].max())
    worst = max(worst, diff)
    print(f"  hidden_states[{i:2d}]  max |diff| = {diff:.3e}")
  if with_head:
    diff = float(np.abs(np.asarray(ours.logits) - ref_out.logits.numpy())[mask].max())
    worst = max(worst, diff)
    print(f"  mlm logits         max |diff| = {diff:.3e}")
  print(f"  worst: {worst:.3e} ({'ok' if worst <= 1e-4 else 'MISMATCH'} at 1e-4)")
  return worst
