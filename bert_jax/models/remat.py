"""Rematerialisation policies by name (`model.remat_policy`): what the backward pass keeps.

    none                     no remat: every activation the backward pass needs is kept
    full                     keep only each layer's input; recompute the layer in the backward pass
    dots                     keep matmul outputs, recompute the elementwise work between them
    dots_with_no_batch_dims  keep the weight matmuls' outputs only (attention products recomputed)
    save_attention_out       keep only the attention block's output projection (`attention_out`)
"""

import jax

# name -> jax.checkpoint policy (None: save nothing); "none" is the absence of remat.
POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "save_attention_out": jax.checkpoint_policies.save_only_these_names("attention_out"),
}
NAMES = ("none", *POLICIES)
