"""Fine-tuning batches of a fixed token budget: as many examples as fit, in one compiled shape.

With `config.data.tokens_per_batch` a training step no longer holds `batch_size` examples
padded or packed into however many rows they need; it holds as many examples as first-fit
into `rows = tokens_per_batch / row_length` packed rows, at most `batch_size` of them:

    example arrays (labels, unpack, ...)  [batch_size, ...]      the real examples, then padding examples
    example_weights                       [batch_size]           1 for real examples, 0 for padding (copies
                                                                 of the first example, read from its rows)
    token arrays, segment_ids             [rows, row_length]     every packed input (a pair task's sides)

so every step has the same shape (one compilation), short examples come many to a step and long
ones few, and the loss is the mean over the step's real examples (the objectives weight their
sums by `example_weights`, and in-batch negatives never include a padding example).

The examples come in each seed's epoch order (`batching.epoch_order`; with group_by_length,
sorted by length within spans of random examples and the steps of the epoch shuffled, as
`batching.train_indices` does), epoch after epoch; an epoch's last step takes what is left.
The plan is a pure function of (seed, lengths, budget), so a resumed run takes the same steps.
Gradient accumulation splits a step into `parts` micro-batches, each a budget of rows / parts
rows and batch_size / parts examples of its own. `auto_budget` sizes the budget whose steps
hold a given batch on average (`tokens_per_batch=-1`).
"""

from __future__ import annotations

import numpy as np

from bert_jax.data import batching
from bert_jax.data.packing import greedy_batches, pack_batch, pad_examples


class TokenBudget:
  """Each step's example indices for one seed, planned epoch by epoch as the run reaches them.

  lengths: {prefix: [N, ...]} tokens of every packed sequence of each example (a listwise group
  has G per example); each prefix (a contrastive pair's sides) is packed into rows of its own.
  keep: the tokens per example the head reads (1 for CLS pooling), else all.
  """

  def __init__(self, lengths: dict[str, np.ndarray], seed: int, row_length: int, rows: int, examples: int,
               parts: int = 1, group_by_length: bool = False, keep: int | None = None):
    if rows % parts or examples % parts:
      raise ValueError(f"a budget of {rows} rows and {examples} examples does not split into {parts} micro-batches")
    self.lengths = {p: np.asarray(v).reshape(len(v), -1) for p, v in lengths.items()}
    self.size = len(next(iter(self.lengths.values())))
    self.seed, self.row_length, self.parts, self.group, self.keep = seed, row_length, parts, group_by_length, keep
    self.rows, self.examples = rows // parts, examples // parts  # per micro-batch
    self._steps: list[list[np.ndarray]] = []   # step -> [parts] index arrays
    self._epoch_ends: list[int] = []           # steps done at the end of each planned epoch
    # Only examples of several sequences (a group) whose tokens exceed one row need a first-fit to tell.
    long = np.flatnonzero(sum((v.max(1) > row_length) | (v.sum(1) > row_length) for v in self.lengths.values()))
    for i in long:
      try:
        greedy_batches([0], {p: v[i:i + 1] for p, v in self.lengths.items()}, self.row_length, self.rows, 1)
      except ValueError:
        raise ValueError(f"training example {i} ({self._describe(i)}) does not fit the token budget of one "
                         f"micro-batch: {self.rows} rows of {self.row_length} tokens; raise "
                         f"data.tokens_per_batch (or lower data.max_length)") from None

  def _describe(self, i: int) -> str:
    return ", ".join(f"{int(v[i].sum())} tokens" + (f" in {p.rstrip('_')}" if p else "") for p, v in
                     self.lengths.items())

  def _plan_epoch(self, epoch: int) -> list[list[np.ndarray]]:
    order = batching.epoch_order(self.seed, epoch, self.size)
    if self.group:
      total = sum(v.sum(1) for v in self.lengths.values())
      span = self.examples * self.parts * batching.GROUP_BATCHES
      order = np.concatenate([chunk[np.argsort(-total[chunk], kind="stable")]
                              for chunk in np.split(order, range(span, len(order), span))])
    micro = [np.asarray(b) for b in greedy_batches(order, self.lengths, self.row_length, self.rows, self.examples)]
    while len(micro) % self.parts:  # the epoch's last step: its missing micro-batches are empty
      micro.append(np.zeros(0, np.int64))
    steps = [micro[s:s + self.parts] for s in range(0, len(micro), self.parts)]
    if self.group:
      steps = [steps[k] for k in np.random.default_rng([self.seed, epoch, 0xB0D6]).permutation(len(steps))]
    return steps

  def _plan_next_epoch(self) -> None:
    self._steps.extend(self._plan_epoch(len(self._epoch_ends)))
    self._epoch_ends.append(len(self._steps))

  def _plan_until(self, steps: int) -> None:
    while len(self._steps) < steps:
      self._plan_next_epoch()

  def step(self, step: int) -> list[np.ndarray]:
    """[parts] arrays of example indices of optimizer step `step` (1-based)."""
    self._plan_until(step)
    return self._steps[step - 1]

  def steps_for_epochs(self, epochs: float) -> int:
    """Steps that cover `epochs` epochs of this seed's plan (a fraction: of the next epoch's steps)."""
    whole = int(epochs)
    while len(self._epoch_ends) <= whole:
      self._plan_next_epoch()
    done = self._epoch_ends[whole - 1] if whole else 0
    return done + int(round((epochs - whole) * (self._epoch_ends[whole] - done)))

  def arrays(self, step: int, take) -> dict[str, np.ndarray]:
    """The step's batch (see the module docstring). take(indices) -> the example-layout arrays of
    those examples at the dataset's full width (batching.take, then the task's train_arrays)."""
    parts = []
    for indices in self.step(step):
      real = len(indices)
      chosen = indices if real else np.zeros(1, np.int64)  # an empty micro-batch: one example, weight 0
      arrays = take(chosen)
      for prefix in self.lengths:
        arrays = pack_batch(arrays, self.row_length, prefix=prefix, rows=self.rows)
        if self.keep is not None:  # the head reads the first `keep` tokens of each example only
          arrays[f"{prefix}unpack"] = arrays[f"{prefix}unpack"][..., :self.keep]
      arrays = pad_examples(arrays, self.examples, tuple(self.lengths), copy_tokens=True)
      weights = np.zeros(self.examples, np.float32)
      weights[:real] = 1.0
      arrays["example_weights"] = weights * arrays.get("example_weights", 1.0)
      parts.append(arrays)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def mean_examples(self, steps: int) -> float:
    """Real examples per step over the first `steps` steps."""
    self._plan_until(steps)
    return float(np.mean([sum(len(i) for i in s) for s in self._steps[:max(steps, 1)]]))


def round_up(rows: int, multiple: int) -> int:
  """rows rounded up to a positive multiple of `multiple` (the micro-batches and data shards a step divides into)."""
  return max(-(-rows // multiple) * multiple, multiple)


def auto_budget(lengths: dict[str, np.ndarray], row_length: int, batch: int, seed: int, multiple: int = 1,
                **options) -> tuple[int, int]:
  """-> (rows, examples): the budget whose steps hold `batch` examples on average over an epoch.

  The cap is 1.5x the batch (short examples come more to a step, long ones fewer); rows go up
  in multiples of `multiple` from the batch's mean tokens until an epoch of seed `seed`'s plan
  averages the batch, and the closer of the last two is taken. options: TokenBudget's (parts,
  group_by_length, keep).
  """
  examples = round_up(batch * 3 // 2, multiple)
  mean = max(float(v.reshape(len(v), -1).sum(1).mean()) for v in lengths.values())
  rows = round_up(int(batch * mean // row_length), multiple)
  previous = None
  for _ in range(256):
    try:
      budget = TokenBudget(lengths, seed, row_length, rows, examples, **options)
    except ValueError:  # a long example (a listwise group) needs more rows than one micro-batch has
      rows += multiple
      continue
    average = budget.mean_examples(budget.steps_for_epochs(1))
    if average >= batch:
      if previous is not None and batch - previous[1] < average - batch:
        return previous[0], examples
      return rows, examples
    previous = (rows, average)
    rows += multiple
  raise ValueError(f"data.tokens_per_batch=-1: no budget up to {rows} rows averages {batch} examples a step")
