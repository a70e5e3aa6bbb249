"""Pretraining objectives: MLM (+ NSP / SOP), replaced-token detection, distillation."""
