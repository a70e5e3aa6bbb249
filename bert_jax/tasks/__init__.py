"""What is trained: objectives turn (params, batch, rng) into loss sums for the shared train step.

  base        the objective interface and every hook a task may implement
  registry    the one task table (name -> class, data objective, best metric, overrides)
  pretrain/   MLM (+ NSP / SOP), replaced-token detection, distillation
  finetune/   classification and regression, tagging, span QA, contrastive, re-ranking
"""
